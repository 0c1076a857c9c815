"""A generic gRPC client, as grpcui, Postman or evans are: it knows no .proto file, learns every
service and message from the server's reflection (v1alpha, the version those tools ask for) and
calls every RPC with messages it builds from the descriptors.

Usage: grpc_generic_client.py ADDR START END

ADDR is host:port of a server running every role. START and END (RFC 3339) are a range of the
product's record for a Backfill. Prints one JSON object: the services and methods reflection
lists, and per method the gRPC status code of the call (and the job's final state for the
IngestService calls). Exits non-zero when reflection or health fails; the caller judges the codes.
"""

import json
import sys
from datetime import datetime

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def stamp(text: str) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(datetime.fromisoformat(text.replace("Z", "+00:00")))
    return t


def call(channel, service, method, request, stream=False):
    """One call by full name; returns (code name, responses)."""
    cls = message_factory.GetMessageClass(method.output_type)
    path = f"/{service.full_name}/{method.name}"
    kwargs = dict(request_serializer=lambda m: m.SerializeToString(), response_deserializer=cls.FromString)
    try:
        if stream:
            out = list(channel.unary_stream(path, **kwargs)(request, timeout=60))
        else:
            out = [channel.unary_unary(path, **kwargs)(request, timeout=60)]
        return "OK", out
    except grpc.RpcError as e:
        return e.code().name, []


def v1_services(channel) -> list:
    """The services reflection v1 lists (grpcurl's version; its messages are v1alpha's, on
    another path)."""
    rpc = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    out = list(rpc(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    return sorted(s.name for s in out[0].list_services_response.service)


def job_of(msg):
    """The job in a response: the message itself, or its `job` field (AIP-style responses)."""
    if msg is not None and "job" in msg.DESCRIPTOR.fields_by_name:
        return msg.job
    return msg


def set_field(msg, names, value):
    """Sets the first field of `names` the message has (the API may name it either way)."""
    for n in names:
        if n in msg.DESCRIPTOR.fields_by_name:
            if isinstance(value, Timestamp):
                # The reflected pool has its own Timestamp class: copy the fields.
                getattr(msg, n).seconds = value.seconds
                getattr(msg, n).nanos = value.nanos
            else:
                setattr(msg, n, value)
            return n
    raise KeyError(f"{msg.DESCRIPTOR.full_name} has none of {names}")


def main() -> int:
    addr, start, end = sys.argv[1:4]
    channel = grpc.insecure_channel(addr)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING, health

    db = ProtoReflectionDescriptorDatabase(channel)
    pool = descriptor_pool.DescriptorPool(db)
    services = sorted(db.get_services())
    report = {"services": {}, "calls": {}, "reflection_v1_services": v1_services(channel)}
    for name in services:
        report["services"][name] = [m.name for m in pool.FindServiceByName(name).methods]

    for name in services:
        if not name.startswith("imerg."):
            continue
        svc = pool.FindServiceByName(name)
        methods = {m.name: m for m in svc.methods}

        def new(m):
            return message_factory.GetMessageClass(methods[m].input_type)()

        if name.endswith(".IngestService"):
            code, out = call(channel, svc, methods["GetStatus"], new("GetStatus"))
            report["calls"]["GetStatus"] = {"code": code, "granules_present": out[0].granules_present if out else None}
            req = new("Backfill")
            set_field(req, ["start", "start_time"], stamp(start))
            set_field(req, ["end", "end_time"], stamp(end))
            code, out = call(channel, svc, methods["Backfill"], req)
            report["calls"]["Backfill"] = {"code": code}
            job = job_of(out[0]) if out else None
            job_id = job.id if job is not None else ""
            ref = lambda m: (lambda r: (set_field(r, ["id", "name"], job_id), r)[1])(new(m))  # noqa: E731
            code, out = call(channel, svc, methods["WatchJob"], ref("WatchJob"), stream=True)
            last = job_of(out[-1]) if out else None
            state = last.DESCRIPTOR.fields_by_name["state"].enum_type.values_by_number[last.state].name if last else None
            report["calls"]["WatchJob"] = {"code": code, "messages": len(out), "state": state}
            code, out = call(channel, svc, methods["GetJob"], ref("GetJob"))
            report["calls"]["GetJob"] = {"code": code, "committed": job_of(out[0]).committed if out else None}
            code, out = call(channel, svc, methods["ListJobs"], new("ListJobs"))
            report["calls"]["ListJobs"] = {"code": code, "jobs": len(out[0].jobs) if out else None}
            code, _ = call(channel, svc, methods["CancelJob"], ref("CancelJob"))
            report["calls"]["CancelJob"] = {"code": code}
            for m in methods:
                report["calls"].setdefault(m, {"code": "NOT_CALLED"})
        else:
            # Internal services: an empty request is refused on its content, not as unknown.
            for m in methods:
                code, _ = call(channel, svc, methods[m], new(m))
                report["calls"][f"{svc.name}.{m}"] = {"code": code}
    print(json.dumps(report, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
