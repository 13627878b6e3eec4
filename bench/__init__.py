"""`make bench`: this job against the notebook recipe it replaces, side by side."""
