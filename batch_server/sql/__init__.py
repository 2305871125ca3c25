"""Numbered SQL migrations of the BatchService (applied by ``mesh.schema.apply_migrations``)."""
