"""kvstore package."""
