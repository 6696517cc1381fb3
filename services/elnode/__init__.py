"""elnode package."""
