internal import CNI
internal import IstioCA
internal import MeshIdentity
internal import MeshTestSupport
internal import NodeAgent
internal import Redirect
internal import SwiftASN1
internal import ZDS

extension FuzzTarget {
    /// Valid and near-valid inputs to start a corpus from, built with our own encoders
    /// where there is one, so they follow the code (`mesh-fuzz --seeds DIR` writes them).
    public var seeds: [(name: String, bytes: [UInt8])] {
        switch self {
        case .http2Inbound: Self.http2Seeds
        case .http2Connection: Self.connectionSeeds
        case .connectHeaders: Self.headerSeeds
        case .zds: Self.zdsSeeds
        case .istioCA: Self.istioCASeeds
        case .netlink: Self.netlinkSeeds
        case .cni: Self.cniSeeds
        case .spiffe:
            [("uri", [0] + Array("spiffe://cluster.local/ns/default/sa/bookinfo-productpage".utf8)),
             ("principal", [1] + Array("cluster.local/ns/istio-system/sa/ztunnel".utf8))]
        case .csr: Self.csrSeeds
        case .iptablesSave: [("in-pod-v4", Array(Self.savedRules(.ipv4).utf8)), ("in-pod-v6", Array(Self.savedRules(.ipv6).utf8))]
        case .localConfig: Self.localConfigSeeds
        case .manifests: Self.manifestSeeds
        case .pluginEvent: Self.pluginEventSeeds
        case .serverHello: Self.serverHelloSeeds
        }
    }

    private static var http2Seeds: [(name: String, bytes: [UInt8])] {
        let frame = HTTP2InboundTarget.frame
        let data = frame(0x0, 0, 1, Array("hello".utf8))
        let padded = frame(0x0, 0x8, 3, [4] + Array("tunnel".utf8) + [0, 0, 0, 0])
        let control = frame(0x8, 0, 1, [0, 0, 0x10, 0]) + frame(0x6, 0, 0, Array(repeating: 7, count: 8))
            + frame(0x4, 0, 0, [0, 4, 0, 0, 0xff, 0xff])
        let ends = frame(0x0, 0x1, 3, Array("bye".utf8)) + frame(0x3, 0, 1, [0, 0, 0, 8])
        let goAway = frame(0x7, 0, 0, [0, 0, 0, 1, 0, 0, 0, 2] + Array("debug".utf8))
        let unregistered = frame(0x0, 0, 5, Array(repeating: 0x61, count: 100))
        return [
            ("data", [0x00] + data), ("data-large-window-pieces", [0x0d] + data + padded),
            ("padded", [0x02] + padded), ("control", [0x04] + control), ("end-stream-reset", [0x06] + ends),
            ("goaway", [0x08] + goAway + data), ("unregistered", [0x0a] + unregistered),
            ("windows-returned", [0x11] + data + Array(repeating: 0, count: 0) + frame(0x0, 0, 1, Array(repeating: 0x62, count: 4000))),
        ]
    }

    /// After the preface: SETTINGS, its ACK, a CONNECT (HPACK literals without indexing,
    /// RFC 7541 §6.2.2), DATA, and for some a WINDOW_UPDATE, a PING or a bad frame.
    private static var connectionSeeds: [(name: String, bytes: [UInt8])] {
        let frame = HTTP2InboundTarget.frame
        func literal(_ name: String, _ value: String) -> [UInt8] {
            [0x00, UInt8(name.utf8.count)] + Array(name.utf8) + [UInt8(value.utf8.count)] + Array(value.utf8)
        }
        let connect = literal(":method", "CONNECT") + literal(":authority", "10.0.0.2:8080")
        let opening = frame(0x4, 0, 0, []) + frame(0x4, 0x1, 0, []) + frame(0x1, 0x4, 1, connect)
        let data = frame(0x0, 0, 1, Array("hello".utf8))
        return [
            ("connect", [0x00] + opening + data), ("connect-no-splice", [0x01] + opening + data),
            ("in-pieces", [0x02] + opening + data + frame(0x8, 0, 1, [0, 1, 0, 0])),
            ("ping-end", [0x0c] + opening + frame(0x6, 0, 0, Array(repeating: 1, count: 8)) + frame(0x0, 0x1, 1, [])),
            ("data-on-stream-0", [0x00] + opening + frame(0x0, 0, 0, [1, 2, 3])),
            // As a client: the server's SETTINGS, its ACK of ours, 200 (`:status` from the
            // static table, RFC 7541 Appendix A, index 8), DATA back.
            ("client", [0x10] + frame(0x4, 0, 0, []) + frame(0x4, 0x1, 0, []) + frame(0x1, 0x4, 1, [0x88])
                + frame(0x0, 0, 1, Array("echo".utf8))),
            ("client-no-splice-pieces", [0x13] + frame(0x4, 0, 0, []) + frame(0x1, 0x4, 1, [0x88]) + frame(0x0, 0x1, 1, [])),
        ]
    }

    private static var headerSeeds: [(name: String, bytes: [UInt8])] {
        [
            ("authority-v4", 0, "10.0.0.1:8080"), ("authority-v6", 0, "[fd00::1]:443"),
            ("forwarded", 1, "for=\"10.1.2.3:55555\";host=reviews.default.svc.cluster.local"),
            ("forwarded-v6", 1, "for=\"[fd00::2]:80\", for=10.0.0.9:1"),
            ("baggage", 2, "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=productpage-v1,service.name=productpage,service.version=v1,cloud.region=eu;p=1"),
            ("traceparent", 3, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            ("address", 4, "::ffff:10.0.0.1"), ("prefix-v4", 5, "10.0.0.0/8"), ("prefix-v6", 5, "fd00::/64"),
        ].map { ($0.0, [UInt8($0.1)] + Array($0.2.utf8)) }
    }

    private static var zdsSeeds: [(name: String, bytes: [UInt8])] {
        let workload = ZDS.WorkloadInfo(name: "productpage-v1-abc", namespace: "default", serviceAccount: "bookinfo-productpage")
        return [
            ("hello", [0] + ZDS.encode(hello: .v1)),
            ("add", [1] + ZDS.encode(.add(uid: "3b1c6f2e-uid", workload: workload))),
            ("delete", [1] + ZDS.encode(.delete(uid: "3b1c6f2e-uid"))),
            ("snapshot-sent", [1] + ZDS.encode(.snapshotSent)), ("keep", [1] + ZDS.encode(.keep(uid: "3b1c6f2e-uid"))),
            ("ack", [2] + ZDS.encode(ZDS.Ack())), ("nack", [2] + ZDS.encode(ZDS.Ack(error: "no such network namespace"))),
        ]
    }

    private static var istioCASeeds: [(name: String, bytes: [UInt8])] {
        let csr = (try? IdentityCSR(identity: CSRTarget.identity).pem) ?? ""
        let request = IstioCertificateService.Request(csr: csr, validityDuration: 86_400, metadata: ["ClusterID": "Kubernetes"])
        let response = IstioCertificateService.Response(certificateChain: ["-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
        return [
            ("request", [0] + GRPCFraming.frame(IstioCertificateService.encode(request))),
            ("response", [1] + GRPCFraming.frame(IstioCertificateService.encode(response))),
        ]
    }

    private static var netlinkSeeds: [(name: String, bytes: [UInt8])] {
        /// One `nlattr`: length, type, payload, padding to 4 octets.
        func attribute(_ type: UInt16, _ payload: [UInt8]) -> [UInt8] {
            let length = UInt16(4 + payload.count)
            let header = [UInt8(length & 0xff), UInt8(length >> 8), UInt8(type & 0xff), UInt8(type >> 8)]
            return header + payload + Array(repeating: 0, count: (4 - payload.count % 4) % 4)
        }
        let name = attribute(3, Array("eth0\0".utf8))
        let nested = attribute(0x8000 | 18, attribute(1, Array("veth\0".utf8)) + attribute(2, [1, 0, 0, 0]))
        return [("ifname", name), ("nested", name + nested + attribute(4, [0xdc, 0x05, 0, 0]))]
    }

    private static var cniSeeds: [(name: String, bytes: [UInt8])] {
        let current = """
            {"cniVersion":"1.0.0","name":"k8s-pod-network","type":"istio-cni","prevResult":{"cniVersion":"1.0.0",\
            "interfaces":[{"name":"eth0","sandbox":"/var/run/netns/x"}],"ips":[{"address":"10.244.1.5/24",\
            "gateway":"10.244.1.1","interface":0}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["10.96.0.10"]}}}
            """
        let older = """
            {"cniVersion":"0.3.1","name":"net","type":"istio-cni","prevResult":{"ips":[{"version":"4",\
            "address":"10.1.0.2/16","interface":0}],"interfaces":[{"name":"eth0"}]}}
            """
        let legacy = #"{"cniVersion":"0.2.0","name":"net","type":"istio-cni","prevResult":{"ip4":{"ip":"10.1.0.2/16","gateway":"10.1.0.1"}}}"#
        // The command index into CNIEnvironment.Command.allCases: ADD, DEL, CHECK, STATUS, GC, VERSION.
        return [
            ("add", 0, current), ("add-0.3.1", 0, older), ("add-0.2.0", 0, legacy), ("delete", 1, current),
            ("check", 2, current), ("status", 3, #"{"cniVersion":"1.1.0","name":"net","type":"istio-cni"}"#),
            ("version", 5, #"{"cniVersion":"1.0.0"}"#), ("no-command", 255, ""), ("bad-json", 0, "{\"cniVersion\":"),
        ].map { ($0.0, [UInt8($0.1)] + Array($0.2.utf8)) }
    }

    private static var csrSeeds: [(name: String, bytes: [UInt8])] {
        guard let csr = try? IdentityCSR(identity: CSRTarget.identity) else { return [] }
        let der = (try? PEMDocument(pemString: csr.pem).derBytes) ?? []
        return [("pem", [0] + Array(csr.pem.utf8)), ("der", [1] + der)]
    }

    /// What `iptables-save` prints for the in-pod rules.
    private static func savedRules(_ family: InPodRules.Family) -> String {
        var lines = ["# Generated by iptables-save v1.8.9 (nf_tables)"]
        for table in InPodRules.ruleSet(InPodRules.Configuration(), family: family).tables {
            lines.append("*\(table.name)")
            lines += ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"].map { ":\($0) ACCEPT [0:0]" }
            lines += table.newChains.map { ":\($0) - [0:0]" }
            lines += table.rules.map(IptablesRenderer.savedForm)
            lines.append("COMMIT")
        }
        return lines.joined(separator: "\n") + "\n"
    }
}

extension FuzzTarget {
    /// A control byte (piece size − 1), then a server's first bytes: a ServerHello for each
    /// TLS 1.3 suite, without a session id, in one-byte and 40-byte records, and an alert.
    fileprivate static var serverHelloSeeds: [(name: String, bytes: [UInt8])] {
        [
            ("aes128", [63] + TLSRecords.serverHello(suite: 0x1301)),
            ("aes256", [7] + TLSRecords.serverHello(suite: 0x1302)),
            ("chacha20", [0] + TLSRecords.serverHello(suite: 0x1303)),
            ("no-session-id", [20] + TLSRecords.serverHello(suite: 0x1302, sessionID: 0)),
            ("one-byte-records", [5] + TLSRecords.fragmented(TLSRecords.serverHello(suite: 0x1301), size: 1)),
            ("40-byte-records", [30] + TLSRecords.fragmented(TLSRecords.serverHello(suite: 0x1303), size: 40)),
            ("warning-then-chacha20", [9] + TLSRecords.alert(90, fatal: false) + TLSRecords.emptyHandshake
                + TLSRecords.serverHello(suite: 0x1303)),
            ("bad-alert", [1] + TLSRecords.alert(40)),
        ]
    }
}
