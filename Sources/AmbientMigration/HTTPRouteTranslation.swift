/// Translates a mesh-bound VirtualService into a Gateway API HTTPRoute with Service
/// parents (a GAMMA route, applied by the Service's waypoint), where a direct translation
/// exists. DestinationRule subsets become one Service per version (Gateway API has no
/// subsets), selecting the parent Service's pods plus the subset's labels.
///
/// All or nothing: a route with any field that has no standard HTTPRoute counterpart
/// (retries, fault injection, CORS, delegation, header-prefix matches, …) is not translated
/// at all, and every such field is named, because a partial translation would silently
/// change behaviour.
enum HTTPRouteTranslation {
    struct Result {
        /// The HTTPRoute, then the version Services it routes to.
        var manifests: [YAMLValue] = []
        /// Why it could not be translated; empty when it was.
        var manual: [String] = []
        /// Differences worth knowing in a translation that was made.
        var notes: [String] = []
    }

    static let unsupportedRouteFields = ["retries", "fault", "corsPolicy", "delegate", "directResponse", "mirrors", "mirrorPercentage", "mirrorPercent", "uriRegexRewrite"]
    static let unsupportedMatchFields = ["sourceLabels", "gateways", "port", "authority", "ignoreUriCase", "withoutHeaders", "sourceNamespace", "scheme"]

    static func translate(_ virtualService: Manifest, cluster: Cluster) -> Result {
        var translator = Translator(virtualService: virtualService, cluster: cluster)
        return translator.run()
    }

    private struct Translator {
        let virtualService: Manifest
        let cluster: Cluster
        var manual: [String] = []
        var notes: [String] = []
        /// `service-subset` → the Service to generate, in first-use order.
        var versionServices: [(String, YAMLValue)] = []

        init(virtualService: Manifest, cluster: Cluster) {
            self.virtualService = virtualService
            self.cluster = cluster
        }

        mutating func run() -> Result {
            let spec = self.virtualService.spec
            for kind in ["tcp", "tls"] where !(spec[kind]?.isEmpty ?? true) {
                self.manual.append("\(kind) routes: translate to a \(kind == "tcp" ? "TCPRoute" : "TLSRoute") by hand")
            }
            var parents: [YAMLValue] = []
            for host in spec["hosts"]?.textList ?? [] {
                guard let service = self.cluster.service(host: host, from: self.virtualService.namespace) else {
                    self.manual.append("host \(host) is not a Service in the input")
                    continue
                }
                if service.headless {
                    self.manual.append("host \(host) is a headless Service: clients connect to pod IPs, which never reach a waypoint")
                    continue
                }
                if service.namespace != self.virtualService.namespace {
                    // A parent in another namespace makes a GAMMA consumer route: it would
                    // apply only to clients in this namespace, not to every caller as the
                    // VirtualService does.
                    self.manual.append("host \(host) is in namespace \(service.namespace): as an HTTPRoute here it would be a consumer route for this namespace's clients only")
                    continue
                }
                let parent = YAMLValue.object(["group": .string(""), "kind": .string("Service"), "name": .string(service.name)])
                if !parents.contains(parent) { parents.append(parent) }
            }
            let routes = spec["http"]?.items ?? []
            if routes.isEmpty { self.manual.append("no http routes") }
            if routes.count > 16 { self.manual.append("\(routes.count) http routes: an HTTPRoute holds at most 16 rules") }
            self.checkOrder(routes)
            let rules = routes.enumerated().map { self.rule($0.element, index: $0.offset) }
            guard self.manual.isEmpty else { return Result(manual: self.manual) }
            if routes.contains(where: { ($0["match"]?.items ?? []).contains { $0["uri"]?["prefix"]?.scalarText.map { !$0.hasSuffix("/") && $0 != "/" } ?? false } }) {
                self.notes.append("PathPrefix matches whole path segments: a prefix like /api no longer matches /apix, as Istio's string prefix did")
            }
            let route = YAMLValue.object([
                "apiVersion": .string("gateway.networking.k8s.io/v1"),
                "kind": .string("HTTPRoute"),
                "metadata": .object(["name": .string(self.virtualService.name), "namespace": .string(self.virtualService.namespace)]),
                "spec": .object(["parentRefs": .sequence(parents), "rules": .sequence(rules)]),
            ])
            return Result(manifests: [route] + self.versionServices.map(\.1), notes: self.notes)
        }

        /// Istio tries the http routes in order; an HTTPRoute ranks matches by specificity
        /// (exact path, longest prefix, method, most headers, most query parameters) and only
        /// then by rule order. The translation is kept only where both pick the same rule:
        /// no later route may hold a match more specific than an earlier one's that a
        /// request could satisfy too.
        private mutating func checkOrder(_ routes: [YAMLValue]) {
            let ranks = routes.map { route in
                (route["match"]?.items ?? []).isEmpty ? [Precedence.catchAll] : (route["match"]?.items ?? []).map(Precedence.init)
            }
            if routes.count > 1, ranks.joined().contains(where: \.regex) {
                self.manual.append("regex path matches with several routes: HTTPRoute ranks them implementation-specifically, not in order")
                return
            }
            for later in ranks.indices {
                for earlier in ranks.indices where earlier < later {
                    if ranks[later].contains(where: { candidate in ranks[earlier].contains { candidate > $0 && candidate.mayOverlap($0) } }) {
                        self.manual.append("http[\(later)] is more specific than http[\(earlier)]: an HTTPRoute would try it first, Istio tries http[\(earlier)] first")
                    }
                }
            }
        }

        /// Gateway API match precedence, highest first.
        struct Precedence: Comparable {
            /// What a request must carry to match: the path (exact, or a prefix), the method,
            /// exact header values; and the counts the ranking uses.
            var path: String
            var exact: Bool
            var regex: Bool
            var method: String?
            var exactHeaders: [String: String] = [:]
            var headers: Int
            var queries: Int

            /// A route without matches: everything, as the lowest-ranked `PathPrefix /`.
            static let catchAll = Precedence(.mapping([]))

            init(_ match: YAMLValue) {
                let uri = match["uri"]
                self.path = uri?["exact"]?.scalarText ?? uri?["prefix"]?.scalarText ?? "/"
                self.exact = uri?["exact"] != nil
                self.regex = uri?["regex"] != nil
                self.method = match["method"]?["exact"]?.scalarText
                self.headers = match["headers"]?.entries?.count ?? 0
                self.queries = match["queryParams"]?.entries?.count ?? 0
                for entry in match["headers"]?.entries ?? [] {
                    if let value = entry.value["exact"]?.scalarText { self.exactHeaders[entry.key] = value }
                }
            }

            /// Whether one request could match both (conservative: `true` unless the paths,
            /// methods or exact header values rule it out).
            func mayOverlap(_ other: Precedence) -> Bool {
                if self.regex || other.regex { return true }
                let paths: Bool
                switch (self.exact, other.exact) {
                case (true, true): paths = self.path == other.path
                case (true, false): paths = self.path.hasPrefix(other.path)
                case (false, true): paths = other.path.hasPrefix(self.path)
                case (false, false): paths = self.path.hasPrefix(other.path) || other.path.hasPrefix(self.path)
                }
                if !paths { return false }
                if let a = self.method, let b = other.method, a != b { return false }
                return !self.exactHeaders.contains { name, value in other.exactHeaders[name].map { $0 != value } ?? false }
            }

            /// Gateway API's ranking: exact path, longest path, method, most headers, most
            /// query parameters.
            static func < (lhs: Precedence, rhs: Precedence) -> Bool {
                (lhs.exact ? 1 : 0, lhs.path.count, lhs.method == nil ? 0 : 1, lhs.headers, lhs.queries)
                    < (rhs.exact ? 1 : 0, rhs.path.count, rhs.method == nil ? 0 : 1, rhs.headers, rhs.queries)
            }
        }

        private mutating func rule(_ route: YAMLValue, index: Int) -> YAMLValue {
            let path = "http[\(index)]"
            for field in HTTPRouteTranslation.unsupportedRouteFields where route[field] != nil {
                self.manual.append("\(path).\(field): no standard HTTPRoute equivalent")
            }
            let matchItems = route["match"]?.items ?? []
            var matches = matchItems.enumerated().map { self.match($0.element, path: "\(path).match[\($0.offset)]") }
            let prefixes = matchItems.filter { $0["uri"]?["prefix"] != nil }.count
            var filters: [YAMLValue] = []
            if let headers = route["headers"] {
                if let request = headers["request"] { filters.append(Self.headerFilter("RequestHeaderModifier", "requestHeaderModifier", request)) }
                if let response = headers["response"] { filters.append(Self.headerFilter("ResponseHeaderModifier", "responseHeaderModifier", response)) }
            }
            if let rewrite = route["rewrite"] {
                if rewrite["uriRegexRewrite"] != nil { self.manual.append("\(path).rewrite.uriRegexRewrite: no HTTPRoute equivalent") }
                if rewrite["uri"] != nil {
                    self.notes.append("\(path).rewrite.uri: Istio replaces the matched prefix as a string, HTTPRoute's ReplacePrefixMatch per path segment (slashes are normalised): check paths such as /prefixextra")
                }
                var fields: [YAMLValue.Entry] = []
                if let uri = rewrite["uri"]?.scalarText {
                    // Istio rewrites the matched prefix (all of `/` without a match); Gateway
                    // API allows ReplacePrefixMatch only with exactly one PathPrefix match.
                    if matchItems.isEmpty {
                        matches = [.object(["path": .object(["type": .string("PathPrefix"), "value": .string("/")])])]
                        fields.append(.init("path", .object(["type": .string("ReplacePrefixMatch"), "replacePrefixMatch": .string(uri)])))
                    } else if matchItems.count == 1, prefixes == 1 {
                        fields.append(.init("path", .object(["type": .string("ReplacePrefixMatch"), "replacePrefixMatch": .string(uri)])))
                    } else if prefixes == 0, matchItems.allSatisfy({ $0["uri"]?["exact"] != nil }) {
                        fields.append(.init("path", .object(["type": .string("ReplaceFullPath"), "replaceFullPath": .string(uri)])))
                    } else {
                        self.manual.append("\(path).rewrite.uri with \(matchItems.count) matches: ReplacePrefixMatch needs exactly one PathPrefix match (split the route)")
                    }
                }
                if let authority = rewrite["authority"]?.scalarText { fields.append(.init("hostname", .string(authority))) }
                filters.append(.object(["type": .string("URLRewrite"), "urlRewrite": .mapping(fields)]))
            }
            if let redirect = route["redirect"] {
                var fields: [YAMLValue.Entry] = []
                if let scheme = redirect["scheme"]?.scalarText { fields.append(.init("scheme", .string(scheme))) }
                if let authority = redirect["authority"]?.scalarText { fields.append(.init("hostname", .string(authority))) }
                if let uri = redirect["uri"]?.scalarText {
                    fields.append(.init("path", .object(["type": .string("ReplaceFullPath"), "replaceFullPath": .string(uri)])))
                }
                if let port = redirect["port"]?.int { fields.append(.init("port", .int(port))) }
                if redirect["derivePort"] != nil { self.manual.append("\(path).redirect.derivePort: no HTTPRoute equivalent") }
                let code = redirect["redirectCode"]?.int ?? 301
                if code == 301 || code == 302 {
                    fields.append(.init("statusCode", .int(code)))
                } else {
                    self.manual.append("\(path).redirect.redirectCode \(code): HTTPRoute redirects are 301 or 302 only")
                }
                filters.append(.object(["type": .string("RequestRedirect"), "requestRedirect": .mapping(fields)]))
            }
            if let mirror = route["mirror"], let ref = self.backendRef(mirror, weight: nil, path: "\(path).mirror") {
                filters.append(.object(["type": .string("RequestMirror"), "requestMirror": .object(["backendRef": ref])]))
            }
            let destinations = route["route"]?.items ?? []
            let refs = destinations.enumerated().compactMap { offset, destination -> YAMLValue? in
                if destination["headers"] != nil { self.manual.append("\(path).route[\(offset)].headers: per-backend header changes") }
                return self.backendRef(destination["destination"] ?? .null, weight: destinations.count > 1 ? (destination["weight"]?.int ?? 0) : nil, path: "\(path).route[\(offset)]")
            }
            var timeouts: YAMLValue?
            if let timeout = route["timeout"]?.scalarText {
                if let duration = Self.gatewayDuration(timeout) {
                    timeouts = .object(["request": .string(duration)])
                } else {
                    self.manual.append("\(path).timeout \(timeout): not a Gateway API duration")
                }
            }
            return .object([
                "matches": matches.isEmpty ? nil : .sequence(matches),
                "filters": filters.isEmpty ? nil : .sequence(filters),
                "backendRefs": refs.isEmpty ? nil : .sequence(refs),
                "timeouts": timeouts,
            ])
        }

        private mutating func match(_ match: YAMLValue, path: String) -> YAMLValue {
            for field in HTTPRouteTranslation.unsupportedMatchFields where match[field] != nil {
                self.manual.append("\(path).\(field): no HTTPRoute match equivalent")
            }
            var fields: [YAMLValue.Entry] = []
            if let uri = match["uri"] {
                if let value = self.stringMatch(uri, path: "\(path).uri", kinds: ["exact": "Exact", "prefix": "PathPrefix", "regex": "RegularExpression"]) {
                    fields.append(.init("path", .object(["type": .string(value.0), "value": .string(value.1)])))
                }
            }
            for (field, target) in [("headers", "headers"), ("queryParams", "queryParams")] {
                guard let entries = match[field]?.entries else { continue }
                let items = entries.compactMap { entry -> YAMLValue? in
                    guard let value = self.stringMatch(entry.value, path: "\(path).\(field).\(entry.key)", kinds: ["exact": "Exact", "regex": "RegularExpression"]) else { return nil }
                    return .object(["name": .string(entry.key), "type": .string(value.0), "value": .string(value.1)])
                }
                fields.append(.init(target, .sequence(items)))
            }
            if let method = match["method"] {
                if let exact = method["exact"]?.scalarText {
                    fields.append(.init("method", .string(exact)))
                } else {
                    self.manual.append("\(path).method: only exact method matches translate")
                }
            }
            return .mapping(fields)
        }

        private mutating func stringMatch(_ value: YAMLValue, path: String, kinds: [String: String]) -> (String, String)? {
            for (key, type) in kinds.sorted(by: { $0.key < $1.key }) {
                if let text = value[key]?.scalarText { return (type, text) }
            }
            self.manual.append("\(path): only \(kinds.keys.sorted().joined(separator: "/")) matches translate")
            return nil
        }

        private mutating func backendRef(_ destination: YAMLValue, weight: Int?, path: String) -> YAMLValue? {
            guard let host = destination["host"]?.scalarText, let service = self.cluster.service(host: host, from: self.virtualService.namespace) else {
                self.manual.append("\(path): destination host \(destination["host"]?.scalarText ?? "?") is not a Service in the input")
                return nil
            }
            if service.namespace != self.virtualService.namespace {
                self.manual.append("\(path): \(service.key) is in another namespace: an HTTPRoute backendRef there needs a ReferenceGrant")
                return nil
            }
            let port = destination["port"]?["number"]?.int ?? (service.ports.count == 1 ? service.ports[0] : nil)
            guard let port else {
                self.manual.append("\(path): \(service.key) has \(service.ports.count) ports and the destination names none")
                return nil
            }
            var name = service.name
            if let subset = destination["subset"]?.scalarText {
                guard let labels = self.cluster.subsets[service.key]?[subset] else {
                    self.manual.append("\(path): subset \(subset) of \(service.key) is not defined by a DestinationRule in the input")
                    return nil
                }
                name = "\(service.name)-\(subset)"
                guard Self.isDNSLabel(name) else {
                    self.manual.append("\(path): \(name) is not a valid Service name (lowercase letters, digits and '-', at most 63): name the version Service by hand")
                    return nil
                }
                let selector = service.selector.merging(labels) { _, subset in subset }
                if let existing = self.cluster.service(host: "\(name).\(service.namespace)", from: service.namespace) {
                    // Reuse a version Service that already exists; never overwrite another one.
                    if existing.selector != selector {
                        self.manual.append("\(path): Service \(existing.key) exists with another selector than subset \(subset) needs")
                        return nil
                    }
                } else {
                    self.addVersionService(name, of: service, selector: selector)
                }
                if self.cluster.subsetPolicies.contains(service.key) {
                    self.notes.append("\(service.key) has DestinationRule traffic policy: it does not follow the route to \(name); copy it to a DestinationRule for \(name)")
                }
            }
            return .object([
                "name": .string(name),
                "namespace": service.namespace == self.virtualService.namespace ? nil : .string(service.namespace),
                "port": .int(port),
                "weight": weight.map(YAMLValue.int),
            ])
        }

        private mutating func addVersionService(_ name: String, of service: Cluster.Service, selector: [String: String]) {
            guard !self.versionServices.contains(where: { $0.0 == "\(service.namespace)/\(name)" }) else { return }
            let ports = (service.manifest.spec["ports"]?.items ?? []).map { port in
                YAMLValue.mapping((port.entries ?? []).filter { ["name", "port", "targetPort", "protocol", "appProtocol"].contains($0.key) })
            }
            self.versionServices.append(("\(service.namespace)/\(name)", .object([
                "apiVersion": .string("v1"),
                "kind": .string("Service"),
                "metadata": .object([
                    "name": .string(name), "namespace": .string(service.namespace),
                    "labels": service.manifest.labels.isEmpty ? nil : .labels(service.manifest.labels),
                ]),
                "spec": .object(["selector": .labels(selector), "ports": .sequence(ports)]),
            ])))
        }

        /// RFC 1035 label, as Service names must be.
        static func isDNSLabel(_ name: String) -> Bool {
            guard (1...63).contains(name.utf8.count), let first = name.utf8.first, let last = name.utf8.last else { return false }
            let allowed = name.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2D }
            return allowed && first >= 0x61 && first <= 0x7A && last != 0x2D
        }

        static func headerFilter(_ type: String, _ field: String, _ changes: YAMLValue) -> YAMLValue {
            func pairs(_ key: String) -> YAMLValue? {
                guard let entries = changes[key]?.entries, !entries.isEmpty else { return nil }
                return .sequence(entries.map { .object(["name": .string($0.key), "value": .string($0.value.scalarText ?? "")]) })
            }
            let remove = changes["remove"]?.textList ?? []
            return .object([
                "type": .string(type),
                field: .object(["set": pairs("set"), "add": pairs("add"), "remove": remove.isEmpty ? nil : .sequence(remove.map(YAMLValue.string))]),
            ])
        }

        /// Istio durations (`1.5s`, `250ms`, `2m`) as Gateway API durations (`1500ms`).
        static func gatewayDuration(_ text: String) -> String? {
            let units: [(String, Double)] = [("ms", 0.001), ("h", 3600), ("m", 60), ("s", 1)]
            for (unit, seconds) in units where text.hasSuffix(unit) {
                guard let value = Double(text.dropLast(unit.count)), value >= 0 else { return nil }
                let milliseconds = value * seconds * 1000
                guard milliseconds == milliseconds.rounded(), milliseconds < 100_000 * 1000 else { return nil }
                let whole = Int(milliseconds)
                // Gateway API durations allow at most 5 digits per unit.
                if whole % 1000 == 0, whole / 1000 <= 99_999 { return "\(whole / 1000)s" }
                return whole <= 99_999 ? "\(whole)ms" : nil
            }
            return nil
        }
    }
}
