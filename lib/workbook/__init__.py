"""workbook package."""
