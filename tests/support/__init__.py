"""Helpers shared by several test folders (imported as `support.<module>`: pytest puts tests/ on sys.path)."""
