"""The YAPTIDE simulation backend: an aiohttp application on PostgreSQL (see README.md)."""
