"""The C extension of the consumer's hot path (``mesh/_fastdecode.c``); the rest is pyproject.toml.

Building it needs a C compiler and the Python headers, which the supported machines have.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mesh._fastdecode",
            sources=["mesh/_fastdecode.c"],
            extra_compile_args=[
                "-O2",
                "-Wall",
                "-Wextra",
                "-Wno-unused-parameter",
                "-Wno-missing-field-initializers",
            ],
        )
    ]
)
