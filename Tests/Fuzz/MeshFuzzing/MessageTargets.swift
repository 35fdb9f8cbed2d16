internal import CNI
internal import Foundation
internal import IstioCA
internal import Netlink
internal import Redirect
internal import ZDS

/// ZDS messages (`zds.proto`), read by the node proxy from the node agent and back. One
/// byte picks the message; the rest is its encoding. Property: whatever decodes, encodes
/// to bytes that decode to the same message, within the 1 024-byte datagram both ends read.
enum ZDSTarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let which = reader.byte() % 3
        let bytes = reader.rest
        switch which {
        case 0:
            guard let version = try? ZDS.decodeHello(bytes) else { return false }
            try require((try? ZDS.decodeHello(ZDS.encode(hello: version))) == version, "hello \(version) does not read back")
        case 1:
            guard let request = try? ZDS.decodeRequest(bytes) else { return false }
            let encoded = ZDS.encode(request)
            try require((try? ZDS.decodeRequest(encoded)) == request, "request \(request) does not read back")
        default:
            guard let ack = try? ZDS.decodeResponse(bytes) else { return false }
            try require((try? ZDS.decodeResponse(ZDS.encode(ack))) == ack, "ack \(ack) does not read back")
        }
        return true
    }
}

/// The Istio CA's `IstioCertificateService/CreateCertificate` body: gRPC's 5-byte prefix
/// and the protobuf message, request (read by our CA server) or response (read by our CA
/// client). Property: what decodes round-trips through our encoding and framing.
enum IstioCATarget {
    static let limit = 64 << 10

    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let isRequest = reader.byte() & 1 == 0
        guard let message = try? GRPCFraming.unframe(reader.rest, limit: Self.limit) else { return false }
        try require(
            (try? GRPCFraming.unframe(GRPCFraming.frame(message), limit: Self.limit)) == message,
            "a message of \(message.count) bytes does not survive framing"
        )
        if isRequest {
            guard let request = try? IstioCertificateService.decodeRequest(message) else { return false }
            let again = try? IstioCertificateService.decodeRequest(IstioCertificateService.encode(request))
            try require(again == request, "request \(request) does not read back")
        } else {
            guard let response = try? IstioCertificateService.decodeResponse(message) else { return false }
            let again = try? IstioCertificateService.decodeResponse(IstioCertificateService.encode(response))
            try require(again == response, "response \(response) does not read back")
        }
        return true
    }
}

/// Netlink attributes (`struct nlattr` runs, RFC 3549 §2.3.2), parsed with libmnl's
/// checks. Properties: a parse never reads past the input (AddressSanitizer), each
/// attribute's payload fits inside it, and nested attributes parse the same way.
enum NetlinkTarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        guard let attributes = try? NetlinkAttributes(parsing: input) else { return false }
        let payload = attributes.all.reduce(0) { $0 + $1.payload.count + 4 }
        try require(payload <= input.count, "\(attributes.all.count) attributes of \(payload) bytes in \(input.count)")
        for attribute in attributes.all where attribute.isNested {
            _ = try? NetlinkAttributes(parsing: attribute.payload)
        }
        return true
    }
}

/// A CNI invocation (CNI spec, "Section 2: Execution Protocol"): one byte picks
/// `CNI_COMMAND` (or leaves it unset), the rest is stdin. The plugin echoes `prevResult`.
/// Properties: exit status 0 or 1; on 1, stdout is the spec's error object — "`code`: A
/// numeric error code", "`msg`: A short message characterizing the error" — at the
/// request's version; on 0 for ADD, a result object with `cniVersion`.
enum CNITarget {
    struct EchoPlugin: CNIPlugin {
        var about: String { "mesh-fuzz echo plugin" }

        func add(_ request: CNIRequest) throws(CNIError) -> JSONValue {
            let previous = try request.previousResult() ?? CNIResult(cniVersion: request.cniVersion)
            return try previous.json(version: request.cniVersion)
        }

        func delete(_ request: CNIRequest) throws(CNIError) { _ = try request.previousResult() }
        func check(_ request: CNIRequest) throws(CNIError) { _ = try request.previousResult() }
    }

    /// Control bytes from this value up (the top 40) leave `CNI_COMMAND` unset, as a broken
    /// runtime would; the 216 below it pick each of the six commands equally often.
    static let firstPickWithoutCommand = 216

    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let commands = CNIEnvironment.Command.allCases
        let pick = Int(reader.byte())
        var environment = ["CNI_CONTAINERID": "fuzz", "CNI_NETNS": "/var/run/netns/fuzz", "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"]
        if pick < Self.firstPickWithoutCommand { environment["CNI_COMMAND"] = commands[pick % commands.count].rawValue }
        if pick & 0x40 != 0 { environment["CNI_ARGS"] = "K8S_POD_NAME=a;K8S_POD_NAMESPACE=b;IgnoreUnknown=1" }
        let outcome = CNISkeleton.run(EchoPlugin(), environment: environment, stdin: Data(reader.rest))
        let command = environment["CNI_COMMAND"] ?? "(none)"
        try require([0, 1].contains(outcome.status), "\(command): exit status \(outcome.status)")
        guard outcome.status == 1 else {
            if command == "ADD" {
                let result = try? JSONValue(parsing: outcome.standardOutput)
                try require(result?["cniVersion"]?.stringValue != nil, "ADD succeeded without a result: \(String(describing: result))")
            }
            return true
        }
        guard let error = try? JSONValue(parsing: outcome.standardOutput), case .object(let fields) = error else {
            throw FuzzFailure("\(command): the error is not a JSON object: \(String(decoding: outcome.standardOutput, as: UTF8.self))")
        }
        guard case .number(let code)? = fields["code"], code >= 1 else {
            throw FuzzFailure("\(command): the error has no positive numeric code: \(error)")
        }
        try require(!(fields["msg"]?.stringValue ?? "").isEmpty, "\(command): the error has no msg: \(error)")
        return false
    }
}

/// `iptables-save` output, which the redirection reads back to see what a pod has.
/// Property: the canonical text parses to the same snapshot.
enum IptablesSaveTarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        let snapshot = IptablesSnapshot(parsing: FuzzInput(input).restAsText)
        let again = IptablesSnapshot(parsing: snapshot.canonicalText)
        try require(again == snapshot, "canonical text reads back differently:\n\(snapshot.canonicalText)")
        return !snapshot.tables.isEmpty
    }
}
