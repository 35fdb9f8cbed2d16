#!/usr/bin/env python3
"""An independent peer for Istio's certificate service, on grpcio + protobuf + cryptography.

  istio_ca.py client --port P --root ROOT.pem --token T [--impersonate ID] [--validity S]
      Calls /istio.v1.auth.IstioCertificateService/CreateCertificate with a fresh P-256
      CSR and prints JSON: {"code": <grpc status name>, "details": ..., "chain": [...],
      "leaf_uri": <URI SAN of the leaf>}.
  istio_ca.py server --port P --ca-cert C --ca-key K --root ROOT.pem --cert S.pem --key S.key --token T
      Serves CreateCertificate (TLS with S.pem/S.key), signing the CSR's public key for the
      caller's ImpersonatedIdentity with the CA key; prints "listening <port>".

The messages are built from descriptors at run time (no generated code), with Istio's
field numbers: IstioCertificateRequest{csr=1, validity_duration=3, metadata=4 Struct},
IstioCertificateResponse{cert_chain=1}.
"""
import argparse, datetime, json, sys, time
from concurrent import futures

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, struct_pb2
from google.protobuf import message_factory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PATH = "/istio.v1.auth.IstioCertificateService/CreateCertificate"


def messages():
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(descriptor_pb2.FileDescriptorProto.FromString(
        struct_pb2.DESCRIPTOR.serialized_pb).SerializeToString())
    f = descriptor_pb2.FileDescriptorProto(name="istio_ca.proto", package="istio.v1.auth", syntax="proto3",
                                           dependency=["google/protobuf/struct.proto"])
    req = f.message_type.add(name="IstioCertificateRequest")
    req.field.add(name="csr", number=1, type=9, label=1)
    req.field.add(name="validity_duration", number=3, type=3, label=1)
    req.field.add(name="metadata", number=4, type=11, label=1, type_name=".google.protobuf.Struct")
    resp = f.message_type.add(name="IstioCertificateResponse")
    resp.field.add(name="cert_chain", number=1, type=9, label=3)
    pool.Add(f)
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateRequest")),
            get(pool.FindMessageTypeByName("istio.v1.auth.IstioCertificateResponse")))


Request, Response = messages()


def client(args):
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
           .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(args.impersonate or "spiffe://cluster.local/ns/x/sa/y")]), critical=True)
           .sign(key, hashes.SHA256()))
    request = Request(csr=csr.public_bytes(serialization.Encoding.PEM).decode(), validity_duration=args.validity)
    if args.impersonate:
        request.metadata.fields["ImpersonatedIdentity"].string_value = args.impersonate
    credentials = grpc.ssl_channel_credentials(root_certificates=open(args.root, "rb").read())
    # The CA presents a SPIFFE certificate (no DNS name): skip hostname matching the way
    # ztunnel does with ALT_CA_HOSTNAME, by overriding the target name to the SAN-less check.
    options = [("grpc.ssl_target_name_override", "istiod.istio-system.svc")]
    out = {}
    try:
        with grpc.secure_channel("127.0.0.1:%d" % args.port, credentials, options) as channel:
            call = channel.unary_unary(PATH, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=Response.FromString)
            metadata = [("authorization", "Bearer " + args.token)] if args.token else []
            response = call(request, metadata=metadata, timeout=10)
            chain = list(response.cert_chain)
            leaf = x509.load_pem_x509_certificate(chain[0].encode())
            uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
            same_key = leaf.public_key().public_numbers() == key.public_key().public_numbers()
            out = {"code": "OK", "chain": chain, "leaf_uri": uris, "same_key": same_key}
    except grpc.RpcError as error:
        out = {"code": error.code().name, "details": error.details()}
    print(json.dumps(out))


def server(args):
    ca_cert = x509.load_pem_x509_certificate(open(args.ca_cert, "rb").read())
    ca_key = serialization.load_pem_private_key(open(args.ca_key, "rb").read(), None)
    root = open(args.root).read()

    def create(request, context):
        tokens = dict(context.invocation_metadata())
        if tokens.get("authorization") != "Bearer " + args.token:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
        identity = request.metadata.fields["ImpersonatedIdentity"].string_value
        csr = x509.load_pem_x509_csr(request.csr.encode())
        now = datetime.datetime.now(datetime.timezone.utc)
        leaf = (x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_cert.subject)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=1))
                .not_valid_after(now + datetime.timedelta(seconds=request.validity_duration or 3600))
                .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
                .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
                .sign(ca_key, hashes.SHA256()))
        return Response(cert_chain=[leaf.public_bytes(serialization.Encoding.PEM).decode(), root])

    handler = grpc.method_handlers_generic_handler("istio.v1.auth.IstioCertificateService", {
        "CreateCertificate": grpc.unary_unary_rpc_method_handler(
            create, request_deserializer=Request.FromString, response_serializer=lambda m: m.SerializeToString())})
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    grpc_server.add_generic_rpc_handlers((handler,))
    credentials = grpc.ssl_server_credentials([(open(args.key, "rb").read(), open(args.cert, "rb").read())])
    port = grpc_server.add_secure_port("127.0.0.1:%d" % args.port, credentials)
    grpc_server.start()
    print("listening %d" % port, flush=True)
    grpc_server.wait_for_termination()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["client", "server"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--root")
    parser.add_argument("--token", default="")
    parser.add_argument("--impersonate")
    parser.add_argument("--validity", type=int, default=3600)
    parser.add_argument("--ca-cert")
    parser.add_argument("--ca-key")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    args = parser.parse_args()
    (client if args.mode == "client" else server)(args)
