"""servicekit package."""
