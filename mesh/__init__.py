"""Runtime shared by both servers: settings, server bootstrap, Kafka plumbing, topic registry."""
