"""Backbones shared by every mode; they know nothing about modes or losses."""
