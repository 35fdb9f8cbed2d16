import Foundation
import MeshIdentity
import MeshState
import InternetAddress
import X509

/// `/config_dump`: workloads, services, policies, certificates and the per-pod proxies, in
/// the shape `istioctl zc` reads (`workloads`, `services`, `policies`, `certificates`).
enum ConfigDump {
    static func render(store: MeshStore, proxies: InPodProxies, certificates: CertificateManager) async -> String {
        let config = store.config
        let workloads: [[String: Any]] = config.workloads.map { w in
            [
                "uid": w.uid, "name": w.name, "namespace": w.namespace, "serviceAccount": w.serviceAccount,
                "trustDomain": w.trustDomain, "workloadIps": w.workloadIPs.map(\.description), "protocol": w.tunnelProtocol.rawValue,
                "node": w.node, "status": w.status.rawValue, "canonicalName": w.canonicalName,
                "authorizationPolicies": w.authorizationPolicies,
                "services": Dictionary(uniqueKeysWithValues: w.services.map { ($0.key, Dictionary(uniqueKeysWithValues: $0.value.map { ("\($0.key)", Int($0.value)) })) }),
            ]
        }
        let services: [[String: Any]] = config.services.map { s in
            [
                "name": s.name, "namespace": s.namespace, "hostname": s.hostname, "vips": s.vips.map(\.description),
                "ports": Dictionary(uniqueKeysWithValues: s.ports.map { ("\($0.key)", Int($0.value)) }),
                "subjectAltNames": s.subjectAltNames, "endpoints": store.endpoints(of: s).map { "\($0.workload.uid)" },
            ]
        }
        let policies: [[String: Any]] = config.policies.map { p in
            ["name": p.name, "namespace": p.namespace, "scope": p.scope.rawValue, "action": p.action.rawValue, "dryRun": p.dryRun, "rules": p.rules.count]
        }
        // Every identity the certificate manager holds, once, sorted (ztunnel `dump_certs`).
        var certs: [[String: Any]] = []
        let formatter = ISO8601DateFormatter()
        for identity in await certificates.identities {
            switch await certificates.state(of: identity) {
            case .available(let certificate):
                certs.append([
                    "identity": identity.uri, "state": "Available",
                    "certChain": certificate.presentedChain.map { c in
                        ["serialNumber": "\(c.serialNumber)", "validFrom": formatter.string(from: c.notValidBefore), "expirationTime": formatter.string(from: c.notValidAfter)]
                    },
                ])
            case .initializing, nil:
                certs.append(["identity": identity.uri, "state": "Initializing", "certChain": [Any]()])
            case .unavailable(let error):
                certs.append(["identity": identity.uri, "state": "Unavailable: \(error)", "certChain": [Any]()])
            }
        }
        let dump: [String: Any] = [
            "workloads": workloads, "services": services, "policies": policies, "certificates": certs, "pods": await proxies.dump().map { pod -> [String: Any] in
                ["uid": pod.uid, "workload": pod.workload, "netnsInode": pod.inode, "state": "Up", "listeners": ["[::]:15001", "[::]:15006", "[::]:15008"]]
            },
        ]
        let data = (try? JSONSerialization.data(withJSONObject: dump, options: [.prettyPrinted, .sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
