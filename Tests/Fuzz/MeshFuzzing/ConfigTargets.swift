internal import AmbientMigration
internal import Foundation
internal import InternetAddress
internal import MeshState
internal import MeshTestSupport
internal import NodeAgent

/// ztunnel's local configuration (YAML, `LOCAL_XDS_PATH`) as the operator writes it, and the
/// store the proxy builds from it. Three control bytes pick the connection the store is
/// asked about (the source workload and the port); the rest is the YAML. Properties: a
/// refused file gets a ``LocalConfigError`` with a message; for an accepted one, the store's
/// indexed authorization agrees with evaluating every policy in order, for every workload;
/// and every service VIP and workload address resolves to an upstream whose address is one
/// of the chosen workload's own.
enum LocalConfigTarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        var reader = FuzzInput(input)
        let pick = Int(reader.byte())
        let port = UInt16(reader.byte()) << 8 | UInt16(reader.byte())
        let config: LocalConfig
        do {
            config = try LocalConfig.parse(reader.restAsText)
        } catch {
            try require(!error.message.isEmpty, "a refusal without a message")
            return false
        }
        let store = MeshStore(config)
        let source = config.workloads.isEmpty ? nil : config.workloads[pick % config.workloads.count]
        for workload in config.workloads {
            let connection = ConnectionAttributes(
                source: pick & 0x80 == 0 ? source?.identity : nil, sourceIP: source?.workloadIPs.first,
                destinationIP: workload.workloadIPs.first, destinationPort: port
            )
            let indexed = store.authorize(connection, to: workload)
            let linear = config.policies.evaluate(connection, for: workload)
            try require(
                indexed.decision == linear.decision && indexed.dryRunMatches == linear.dryRunMatches,
                "workload \(workload.uid): the store decides \(indexed), the policies in order \(linear)"
            )
        }
        var random = SeededGenerator(seed: UInt64(pick))  // the same endpoint pick on every replay
        let destinations = config.services.flatMap { service in service.vips.map { ($0.address, service.ports.keys.min() ?? port) } }
            + config.workloads.flatMap { workload in workload.workloadIPs.map { ($0, port) } }
        for (address, destinationPort) in destinations {
            let upstream: MeshStore.Upstream
            do {
                upstream = try store.resolve(destination: address, port: destinationPort, from: source, using: &random)
            } catch {
                continue  // a service without a usable endpoint: refused with a reason
            }
            switch upstream {
            case .hbone(let workload, let chosen, _, _), .tcp(let workload, let chosen, _, _):
                try require(workload.workloadIPs.contains(chosen), "\(address) resolves to \(chosen), not an address of \(workload.uid)")
            case .passthrough(let chosen, let chosenPort):
                try require(chosen == address && chosenPort == destinationPort, "\(address) passes through to \(chosen):\(chosenPort)")
            }
        }
        return true
    }
}

/// Kubernetes manifests as `ambient-migrate` reads them (multi-document YAML, Lists), through
/// the whole analysis. Properties: the report renders as text and encodes as JSON; every
/// manifest the plan generates parses back without an error, as exactly the resource the
/// plan says it is. Accepted: at least one object read and no error diagnostic.
enum ManifestsTarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        let set = ManifestLoader.parse(String(decoding: input, as: UTF8.self), file: "fuzz.yaml")
        let report = MigrationAnalyzer().analyze(set)
        try require(!report.text(color: false).isEmpty, "an empty report")
        do { _ = try report.jsonText() } catch { throw FuzzFailure("the report does not encode as JSON: \(error)") }
        for generated in report.plan.generated {
            let back = ManifestLoader.parse(generated.yaml, file: generated.path)
            try require(
                !back.diagnostics.contains { $0.severity == .error },
                "generated \(generated.path) does not parse back: \(back.diagnostics.map(\.message))"
            )
            try require(
                back.manifests.map(\.id) == [generated.resource],
                "generated \(generated.path) reads back as \(back.manifests.map(\.id)), not \(generated.resource)"
            )
        }
        return !set.manifests.isEmpty && !set.diagnostics.contains { $0.severity == .error }
    }
}

/// The node agent's answer to the CNI plugin's `POST /cmdadd`, as the plugin reads it
/// (HTTP/1.1 on a Unix socket). Property: the plugin reads as it receives and stops at the
/// first prefix that is a whole response or malformed; that outcome is the whole input's,
/// wherever the bytes were cut. Accepted: the whole input is a response (at end of stream).
enum PluginEventTarget {
    static func run(_ input: [UInt8]) throws(FuzzFailure) -> Bool {
        let data = Data(input)
        let whole = PluginEventClient.parse(data)
        let atEOF = PluginEventClient.parse(data, atEOF: true)
        if whole != .incomplete { try require(atEOF == whole, "at end of stream \(atEOF), before it \(whole)") }
        let step = max(1, input.count / 32)
        for cut in stride(from: 0, to: input.count, by: step) {
            let early = PluginEventClient.parse(data.prefix(cut))
            guard early != .incomplete else { continue }
            try require(early == whole, "the first \(cut) bytes read as \(early), all \(input.count) as \(whole)")
        }
        if case .complete = atEOF { return true }
        return false
    }
}

extension FuzzTarget {
    /// A local config with both tunnel protocols, a service with a named port, and policies
    /// of all three scopes; and a file with only a workload.
    static var localConfigSeeds: [(name: String, bytes: [UInt8])] {
        let mesh = """
            workloads:
            - uid: c1//v1/Pod/apps/web-0
              name: web-0
              namespace: apps
              serviceAccount: web
              trustDomain: cluster.local
              workloadIps: ["10.0.0.20", "fd00::20"]
              protocol: HBONE
              capacity: 2
              authorizationPolicies: ["apps/web-allow"]
              services:
                "apps/web.apps.svc.cluster.local":
                  80: 8080
            - uid: c1//v1/Pod/legacy/echo
              name: echo
              namespace: legacy
              workloadIps: ["10.0.0.30"]
              protocol: TCP
              services:
                "legacy/echo.legacy.svc.cluster.local": {}
            policies:
            - name: web-allow
              namespace: apps
              scope: WorkloadSelector
              action: Allow
              rules:
              - - - principals: [!Exact "cluster.local/ns/apps/sa/web"]
                - - destinationPorts: [8080]
            - name: plaintext
              namespace: istio-system
              scope: Global
              action: Deny
              rules:
              - - - notPrincipals: [!Presence []]
                    sourceIps: ["10.0.0.0/16"]
            - name: audit
              namespace: apps
              scope: Namespace
              action: Deny
              dryRun: true
              rules:
              - - - principals: [!Suffix "/sa/curl"]
            services:
            - name: web
              namespace: apps
              hostname: web.apps.svc.cluster.local
              vips: ["/10.96.0.20"]
              ports: {80: 8080}
              subjectAltNames: ["spiffe://cluster.local/ns/apps/sa/web"]
            - name: echo
              namespace: legacy
              hostname: echo.legacy.svc.cluster.local
              vips: ["/10.96.0.30"]
              ports: {9000: 0}
            """
        let single = """
            workloads:
            - uid: local
              namespace: default
              workloadIps: ["127.0.0.1"]
              services: {}
            """
        return [("mesh", [0, 0, 80] + Array(mesh.utf8)), ("plaintext-source", [0x81, 0x1f, 0x90] + Array(mesh.utf8)),
                ("single", [0, 0, 80] + Array(single.utf8))]
    }

    /// A namespace with sidecar injection, a Service, an AuthorizationPolicy with HTTP
    /// rules (needs a waypoint) and a VirtualService with a DestinationRule.
    static var manifestSeeds: [(name: String, bytes: [UInt8])] {
        let shop = """
            apiVersion: v1
            kind: Namespace
            metadata: {name: shop, labels: {istio-injection: enabled}}
            ---
            apiVersion: v1
            kind: Service
            metadata: {name: cart, namespace: shop}
            spec: {selector: {app: cart}, ports: [{name: http, port: 80, targetPort: 8080}]}
            ---
            apiVersion: security.istio.io/v1
            kind: AuthorizationPolicy
            metadata: {name: cart-get, namespace: shop}
            spec:
              selector: {matchLabels: {app: cart}}
              action: ALLOW
              rules:
              - from: [{source: {principals: ["cluster.local/ns/shop/sa/frontend"]}}]
                to: [{operation: {methods: ["GET"], paths: ["/cart/*"]}}]
            ---
            apiVersion: networking.istio.io/v1
            kind: VirtualService
            metadata: {name: cart, namespace: shop}
            spec:
              hosts: [cart]
              http:
              - route:
                - destination: {host: cart, subset: v2}
                  weight: 100
            ---
            apiVersion: networking.istio.io/v1
            kind: DestinationRule
            metadata: {name: cart, namespace: shop}
            spec:
              host: cart.shop.svc.cluster.local
              subsets: [{name: v2, labels: {version: v2}}]
            """
        let list = """
            apiVersion: v1
            kind: List
            items:
            - apiVersion: security.istio.io/v1
              kind: PeerAuthentication
              metadata: {name: default, namespace: istio-system}
              spec: {mtls: {mode: STRICT}}
            """
        return [("shop", Array(shop.utf8)), ("list", Array(list.utf8))]
    }

    /// The agent's answers: accepted, refused with a reason, and one without a length.
    static var pluginEventSeeds: [(name: String, bytes: [UInt8])] {
        [
            ("ok", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            ("refused", "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 28\r\n\r\npod sandbox has no netns yet"),
            ("until-close", "HTTP/1.0 200 OK\r\n\r\nadded"),
        ].map { ($0.0, Array($0.1.utf8)) }
    }
}
