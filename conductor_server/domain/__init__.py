"""The conductor's domain: pipeline definitions, resolution, completion rules, run progression.

Pure code: nothing here imports grpc, protobuf, generated code, redis, asyncpg or aiokafka
(``tests/unit/test_import_rules.py`` enforces it).

- ``model``: steps, pipelines, outcomes, step states and the completion rules.
- ``schema``: the YAML schema and its field-level parser.
- ``validation``: checks across steps and pipelines (duplicates, dependencies, cycles...).
- ``loader``: YAML text to a validated ``PipelineCatalog``, or every problem at once.
- ``catalog``: the loaded definitions, their stable order and version hashes.
- ``graph``: dependency closure, stable topological order, cycles.
- ``resolution``: a target to the steps a batch still needs; pruning; gates.
- ``progression``: what a pipeline run dispatches, skips, and how it ends.
- ``errors``: the domain's error tree and typed error records.
"""
