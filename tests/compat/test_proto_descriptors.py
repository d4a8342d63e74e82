"""feast-rs's .proto files describe exactly the messages of the feast==0.67.0 package.

`feast-rs internal descriptor-set` writes the FileDescriptorSet compiled from proto/protos;
every message, field (name, number, type, label, type name, oneof membership), enum value,
service and RPC is compared with the descriptors the Feast package ships.
"""

import importlib
import pkgutil

from google.protobuf import descriptor_pb2

import feast.protos.feast as feast_protos
from conftest import run


def feast_files():
    files = {}
    for mod in pkgutil.walk_packages(feast_protos.__path__, feast_protos.__name__ + "."):
        if not mod.name.endswith("_pb2") or "grpc" in mod.name:
            continue
        fdp = descriptor_pb2.FileDescriptorProto()
        importlib.import_module(mod.name).DESCRIPTOR.CopyToProto(fdp)
        files[fdp.name] = fdp
    return files


def shape(fdp):
    """Everything that matters on the wire, as comparable tuples."""

    def message(m, prefix):
        out = {}
        name = f"{prefix}.{m.name}"
        oneofs = [o.name for o in m.oneof_decl]
        out[name] = sorted(
            (
                f.name,
                f.number,
                f.type,
                f.label,
                f.type_name,
                oneofs[f.oneof_index] if f.HasField("oneof_index") else None,
                f.proto3_optional,
            )
            for f in m.field
        )
        for e in m.enum_type:
            out[f"{name}.{e.name}"] = sorted((v.name, v.number) for v in e.value)
        for n in m.nested_type:
            out.update(message(n, name))
        return out

    out = {"package": fdp.package, "dependency": sorted(fdp.dependency)}
    for m in fdp.message_type:
        out.update(message(m, fdp.package))
    for e in fdp.enum_type:
        out[f"{fdp.package}.{e.name}"] = sorted((v.name, v.number) for v in e.value)
    for s in fdp.service:
        out[f"service {s.name}"] = sorted(
            (r.name, r.input_type, r.output_type, r.client_streaming, r.server_streaming) for r in s.method
        )
    return out


def test_descriptors_match_feast(tmp_path, feast_rs_bin):
    out = tmp_path / "fds.bin"
    run([feast_rs_bin, "internal", "descriptor-set", "--out", out])
    ours = descriptor_pb2.FileDescriptorSet()
    ours.ParseFromString(out.read_bytes())
    our_files = {f.name: f for f in ours.file if f.name.startswith("feast/")}
    theirs = feast_files()
    assert sorted(our_files) == sorted(theirs)
    for name, fdp in theirs.items():
        assert shape(our_files[name]) == shape(fdp), name
