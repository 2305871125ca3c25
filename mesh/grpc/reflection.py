"""Server reflection, v1 and v1alpha, serving the contracts with their comments.

grpcio-reflection answers from the default descriptor pool, which keeps no source comments (so
``grpcurl describe`` showed bare messages), cannot find a method by name (``describe
pkg.Service.Method`` answered "Symbol not found") and offers v1alpha only. This servicer answers
from ``FileDescriptorProto``s instead: ``generated/descriptors.binpb`` (every proto of ``protos/``
with its imports and source comments, written by ``scripts/gen_protos.py``) and, for the other
services a server offers (health, reflection itself), their files from the default pool. Every
symbol a descriptor pool knows is indexed: packages' messages, fields, oneofs, enums, enum values,
services, methods and extensions.

``grpc.reflection.v1`` is ``grpc.reflection.v1alpha`` under a new package name, message for
message and field for field, so one implementation answers both with the v1alpha message classes
(the wire format is the same), and the v1 file it describes is the v1alpha one renamed.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as pb

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
DESCRIPTOR_SET = "descriptors.binpb"  # in the ``generated`` package

FileProto = descriptor_pb2.FileDescriptorProto


class DescriptorIndex:
    """Files by name, and the file that defines each fully qualified symbol."""

    def __init__(self, files: Iterable[FileProto]) -> None:
        self._files: dict[str, FileProto] = {}
        self._serialized: dict[str, bytes] = {}
        self.symbols: dict[str, str] = {}
        self._extensions: dict[str, dict[int, str]] = {}
        for file in files:
            self._files[file.name] = file
            self._serialized[file.name] = file.SerializeToString()
            self._index(file)

    def _index(self, file: FileProto) -> None:
        scope = file.package
        for message in file.message_type:
            self._index_message(file.name, scope, message)
        for enum in file.enum_type:
            self._index_enum(file.name, scope, enum)
        for service in file.service:
            name = _qualified(scope, service.name)
            self.symbols[name] = file.name
            for method in service.method:
                self.symbols[f"{name}.{method.name}"] = file.name
        for extension in file.extension:
            self._index_extension(file.name, scope, extension)

    def _index_message(
        self, file: str, scope: str, message: descriptor_pb2.DescriptorProto
    ) -> None:
        name = _qualified(scope, message.name)
        self.symbols[name] = file
        for part in [f.name for f in message.field] + [o.name for o in message.oneof_decl]:
            self.symbols[f"{name}.{part}"] = file
        for nested in message.nested_type:
            self._index_message(file, name, nested)
        for enum in message.enum_type:
            self._index_enum(file, name, enum)
        for extension in message.extension:
            self._index_extension(file, name, extension)

    def _index_enum(self, file: str, scope: str, enum: descriptor_pb2.EnumDescriptorProto) -> None:
        self.symbols[_qualified(scope, enum.name)] = file
        for value in enum.value:  # enum values are siblings of their enum, as in C++
            self.symbols[_qualified(scope, value.name)] = file

    def _index_extension(
        self, file: str, scope: str, extension: descriptor_pb2.FieldDescriptorProto
    ) -> None:
        self.symbols[_qualified(scope, extension.name)] = file
        extendee = extension.extendee.lstrip(".")
        self._extensions.setdefault(extendee, {})[extension.number] = file

    def has_file(self, name: str) -> bool:
        return name in self._files

    def file_with_dependencies(self, name: str) -> list[bytes]:
        """``name`` serialized, then every file it depends on (each once), as C++ servers send."""
        order: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop()
            if current in order or current not in self._files:
                continue
            order.append(current)
            pending.extend(reversed(self._files[current].dependency))
        return [self._serialized[n] for n in order]

    def file_of_symbol(self, symbol: str) -> str | None:
        return self.symbols.get(symbol)

    def file_of_extension(self, message: str, number: int) -> str | None:
        return self._extensions.get(message, {}).get(number)

    def extension_numbers(self, message: str) -> list[int] | None:
        """The extension numbers of a known message type (None for an unknown type)."""
        if message not in self.symbols:
            return None
        return sorted(self._extensions.get(message, {}))


def _qualified(scope: str, name: str) -> str:
    return f"{scope}.{name}" if scope else name


def _v1_file() -> FileProto:
    """The v1 reflection file: v1alpha's under v1's names."""
    file = FileProto()
    pb.DESCRIPTOR.CopyToProto(file)
    file.name = "grpc/reflection/v1/reflection.proto"
    file.package = "grpc.reflection.v1"
    file.options.Clear()
    file.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    file.options.java_package = "io.grpc.reflection.v1"
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    for message in file.message_type:
        for field in message.field:
            field.type_name = field.type_name.replace(old, new)
    for method in file.service[0].method:
        method.input_type = method.input_type.replace(old, new)
        method.output_type = method.output_type.replace(old, new)
    return file


def _from_default_pool(symbol: str, known: set[str]) -> list[FileProto]:
    """The file defining ``symbol`` in the default pool and its dependencies not in ``known``."""
    pool = descriptor_pool.Default()
    try:
        pending = [pool.FindFileContainingSymbol(symbol)]
    except KeyError:
        return []
    found = []
    while pending:
        descriptor = pending.pop()
        if descriptor.name in known:
            continue
        known.add(descriptor.name)
        file = FileProto()
        descriptor.CopyToProto(file)
        found.append(file)
        pending.extend(descriptor.dependencies)
    return found


def load_index(service_names: Sequence[str]) -> DescriptorIndex:
    """The contracts with their comments, plus the files of any other service in ``names``."""
    raw = importlib.resources.files("generated").joinpath(DESCRIPTOR_SET).read_bytes()
    files = [*descriptor_pb2.FileDescriptorSet.FromString(raw).file, _v1_file()]
    ours = DescriptorIndex(files)
    known = {f.name for f in files}
    for name in service_names:
        if ours.file_of_symbol(name) is None:
            files += _from_default_pool(name, known)
    return DescriptorIndex(files)


class ReflectionServicer:
    """Answers ``ServerReflectionInfo`` streams (v1 and v1alpha) from a ``DescriptorIndex``."""

    def __init__(self, index: DescriptorIndex, service_names: Sequence[str]) -> None:
        self._index = index
        self._services = tuple(service_names)

    async def ServerReflectionInfo(
        self, requests: AsyncIterator[pb.ServerReflectionRequest], context: Any
    ) -> AsyncIterator[pb.ServerReflectionResponse]:
        async for request in requests:
            yield self.answer(request)

    def answer(self, request: pb.ServerReflectionRequest) -> pb.ServerReflectionResponse:
        response = pb.ServerReflectionResponse(valid_host=request.host, original_request=request)
        kind = request.WhichOneof("message_request")
        index = self._index
        if kind == "list_services":
            services = [pb.ServiceResponse(name=name) for name in self._services]
            response.list_services_response.service.extend(services)
            return response
        if kind == "all_extension_numbers_of_type":
            numbers = index.extension_numbers(request.all_extension_numbers_of_type)
            if numbers is None:
                return _error(response, f"type {request.all_extension_numbers_of_type} not found")
            answer = response.all_extension_numbers_response
            answer.base_type_name = request.all_extension_numbers_of_type
            answer.extension_number.extend(numbers)
            return response
        if kind == "file_by_filename":
            name: str | None = request.file_by_filename
            what = f"file {request.file_by_filename}"
        elif kind == "file_containing_symbol":
            name = index.file_of_symbol(request.file_containing_symbol)
            what = f"symbol {request.file_containing_symbol}"
        elif kind == "file_containing_extension":
            extension = request.file_containing_extension
            name = index.file_of_extension(extension.containing_type, extension.extension_number)
            what = f"extension {extension.extension_number} of {extension.containing_type}"
        else:
            return _error(response, "unknown request", grpc.StatusCode.INVALID_ARGUMENT)
        if name is None or not index.has_file(name):
            return _error(response, f"{what} not found")
        response.file_descriptor_response.file_descriptor_proto.extend(
            index.file_with_dependencies(name)
        )
        return response


def _error(
    response: pb.ServerReflectionResponse,
    message: str,
    code: grpc.StatusCode = grpc.StatusCode.NOT_FOUND,
) -> pb.ServerReflectionResponse:
    response.error_response.error_code = code.value[0]
    response.error_response.error_message = message
    return response


def add_reflection(server: grpc.aio.Server, service_names: Sequence[str]) -> None:
    """Serve reflection v1 and v1alpha on ``server``, listing ``service_names`` and itself."""
    names = (*service_names, *SERVICE_NAMES)
    servicer = ReflectionServicer(load_index(names), names)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=pb.ServerReflectionRequest.FromString,
        response_serializer=pb.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        tuple(
            grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": handler})
            for name in SERVICE_NAMES
        )
    )
