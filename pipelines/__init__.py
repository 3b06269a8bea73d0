"""End-to-end jobs built on the gananomaly library (tabular, image, batch scoring)."""
