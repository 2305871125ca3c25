"""SQL migrations shared by both servers (applied under the name ``mesh``)."""
