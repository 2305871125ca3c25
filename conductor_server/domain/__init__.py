"""The conductor's domain: pipeline definitions, resolution, completion rules, run progression.

Pure code: nothing here imports grpc, protobuf, generated code, redis, asyncpg or aiokafka
(``tests/unit/test_import_rules.py`` enforces it).
"""
