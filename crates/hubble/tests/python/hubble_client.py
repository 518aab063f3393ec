#!/usr/bin/env python3
"""A Hubble Observer client written with grpcio, independent of Plexus's Rust code.

Used by tests/python_client.rs to prove the wire format: the stubs are generated from the crate's
.proto files with grpc_tools.protoc into --stubs, and this script prints, one JSON object a line,
every GetFlows response, then the ServerStatus and GetNodes answers.
"""

import argparse
import json
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True, help="host:port of the Observer API")
    parser.add_argument("--stubs", required=True, help="directory with the generated modules")
    parser.add_argument("--number", type=int, default=0)
    parser.add_argument("--first", action="store_true")
    parser.add_argument(
        "--allow", action="append", default=[], help="a FlowFilter as JSON (repeatable)"
    )
    parser.add_argument(
        "--deny", action="append", default=[], help="a FlowFilter as JSON (repeatable)"
    )
    args = parser.parse_args()

    sys.path.insert(0, args.stubs)
    import grpc
    from google.protobuf import json_format
    from flow import flow_pb2
    from observer import observer_pb2, observer_pb2_grpc

    def endpoint(ep):
        return {
            "pod": f"{ep.namespace}/{ep.pod_name}",
            "identity": ep.identity,
            "labels": list(ep.labels),
            "cluster": ep.cluster_name,
            "workloads": [{"name": w.name, "kind": w.kind} for w in ep.workloads],
        }

    def l4(flow):
        which = flow.l4.WhichOneof("protocol")
        if which in ("TCP", "UDP", "SCTP"):
            proto = getattr(flow.l4, which)
            out = {
                "protocol": which,
                "source_port": proto.source_port,
                "destination_port": proto.destination_port,
            }
            if which == "TCP":
                out["flags"] = [
                    name for name in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")
                    if getattr(proto.flags, name)
                ]
            return out
        return {"protocol": which}

    request = observer_pb2.GetFlowsRequest(number=args.number, first=args.first)
    for spec in args.allow:
        request.whitelist.append(json_format.Parse(spec, flow_pb2.FlowFilter()))
    for spec in args.deny:
        request.blacklist.append(json_format.Parse(spec, flow_pb2.FlowFilter()))

    with grpc.insecure_channel(args.address) as channel:
        stub = observer_pb2_grpc.ObserverStub(channel)
        for resp in stub.GetFlows(request, timeout=10):
            kind = resp.WhichOneof("response_types")
            if kind != "flow":
                print(json.dumps({"kind": kind}))
                continue
            f = resp.flow
            print(
                json.dumps(
                    {
                        "kind": "flow",
                        "node_name": resp.node_name,
                        "time": resp.time.ToJsonString(),
                        "uuid": f.uuid,
                        "source": endpoint(f.source),
                        "destination": endpoint(f.destination),
                        "ip": {"source": f.IP.source, "destination": f.IP.destination,
                               "version": flow_pb2.IPVersion.Name(f.IP.ipVersion)},
                        "l4": l4(f),
                        "verdict": flow_pb2.Verdict.Name(f.verdict),
                        "drop_reason_desc": flow_pb2.DropReason.Name(f.drop_reason_desc),
                        "event_type": {"type": f.event_type.type,
                                       "sub_type": f.event_type.sub_type},
                        "traffic_direction": flow_pb2.TrafficDirection.Name(f.traffic_direction),
                        "is_reply": f.is_reply.value if f.HasField("is_reply") else None,
                    }
                )
            )

        status = stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=10)
        print(json.dumps({"kind": "status", **json_format.MessageToDict(
            status, preserving_proto_field_name=True)}))
        nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=10)
        for node in nodes.nodes:
            print(json.dumps({"kind": "node", **json_format.MessageToDict(
                node, preserving_proto_field_name=True)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
