"""Showing results: terminal tables (plots and HTML pages come with the sweep report)."""
