"""Exposure logs, readers, preprocessing, splitting and the prepared-dataset format."""
