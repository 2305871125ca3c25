"""The BatchService's domain: batches, essays, pipeline runs and how a run advances.

Pure code: nothing here imports grpc, protobuf, generated code, redis, asyncpg or aiokafka
(``tests/unit/test_batch_domain_imports.py`` enforces it). Values are frozen dataclasses;
persisted states are ``str`` enums.
"""
