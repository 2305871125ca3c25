"""Content stores: where essay texts live (in memory, in PostgreSQL, or an HTTP Content Service)."""
