internal import Foundation

extension MigrationReport {
    /// The report as JSON for tools: findings, diagnostics and the plan, keys sorted.
    public func jsonText() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self) + "\n"
    }

    /// The report for a terminal: a table of findings, then problems, waypoints, generated
    /// manifests, manual work and the steps. ANSI colour only when `color` is set.
    public func text(color: Bool) -> String {
        let style = TextStyle(enabled: color)
        var out = ""
        let namespaces = self.inventory.namespaces.joined(separator: ", ")
        out += style.bold("Ambient migration report") + ": \(self.findings.count) policies and routes, \(self.inventory.services) Services, \(self.inventory.workloads) workloads in namespaces \(namespaces.isEmpty ? "-" : namespaces)\n\n"

        let width = min(56, max(8, self.findings.map(\.resource.description.count).max() ?? 8))
        let placementWidth = Placement.allCases.map(\.rawValue.count).max()!
        out += style.bold(Self.pad("RESOURCE", width) + "  " + Self.pad("PLACEMENT", placementWidth) + "  WHY") + "\n"
        for finding in self.findings {
            let reasons = finding.reasons.isEmpty ? [""] : finding.reasons
            let placement = style.placement(finding.placement, Self.pad(finding.placement.rawValue, placementWidth))
            out += Self.pad(finding.resource.description, width) + "  " + placement + "  " + reasons[0] + "\n"
            for reason in reasons.dropFirst() {
                out += String(repeating: " ", count: width + placementWidth + 4) + reason + "\n"
            }
        }
        let counts = Placement.allCases.compactMap { placement -> String? in
            let count = self.findings.filter { $0.placement == placement }.count
            return count == 0 ? nil : "\(count) \(placement.rawValue)"
        }
        out += "\n" + counts.joined(separator: ", ") + "\n"

        if !self.diagnostics.isEmpty {
            out += "\n" + style.bold("Problems") + "\n"
            for diagnostic in self.diagnostics {
                let subject = [diagnostic.resource?.description, diagnostic.location?.description].compactMap { $0 }.joined(separator: " at ")
                out += "  " + style.severity(diagnostic.severity) + " " + (subject.isEmpty ? "" : subject + ": ") + diagnostic.message + "\n"
            }
        }
        if !self.plan.waypoints.isEmpty {
            out += "\n" + style.bold("Waypoints") + "\n"
            for waypoint in self.plan.waypoints {
                out += "  \(waypoint.namespace)/\(waypoint.name) (\(waypoint.scope.rawValue)\(waypoint.existing ? ", exists" : "")): Services \(waypoint.services.joined(separator: ", ")); \(waypoint.reason)\n"
            }
        }
        if !self.plan.generated.isEmpty {
            out += "\n" + style.bold("Generated manifests") + " (written by --emit DIR)\n"
            for manifest in self.plan.generated {
                out += "  \(manifest.path): \(manifest.purpose)\n"
            }
        }
        if !self.plan.manual.isEmpty {
            out += "\n" + style.bold("Manual work") + "\n"
            for item in self.plan.manual {
                out += "  \(item.resource):\n" + item.reasons.map { "    - \($0)\n" }.joined()
            }
        }
        if !self.plan.steps.isEmpty {
            out += "\n" + style.bold("Steps") + "\n"
            for (index, step) in self.plan.steps.enumerated() {
                out += "  \(index + 1). \(step.title)\n"
                out += step.commands.map { "     $ \($0)\n" }.joined()
                out += step.notes.map { "     " + style.dim("# \($0)") + "\n" }.joined()
            }
        }
        return out
    }

    static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
    }
}

/// ANSI SGR sequences, or nothing.
struct TextStyle {
    var enabled: Bool

    private func sgr(_ code: String, _ text: String) -> String {
        self.enabled ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text
    }

    func bold(_ text: String) -> String { self.sgr("1", text) }
    func dim(_ text: String) -> String { self.sgr("2", text) }

    func placement(_ placement: Placement, _ text: String) -> String {
        switch placement {
        case .nodeProxy: return self.sgr("32", text)
        case .waypoint: return self.sgr("33;1", text)
        case .ingressGateway: return self.sgr("36", text)
        case .notUsed: return self.sgr("35", text)
        case .unknown: return self.sgr("2", text)
        case .unaffected: return text
        }
    }

    func severity(_ severity: Diagnostic.Severity) -> String {
        let label = severity.rawValue.uppercased()
        switch severity {
        case .error: return self.sgr("31;1", label)
        case .critical: return self.sgr("41;97;1", label)
        case .warning: return self.sgr("33", label)
        case .note: return self.sgr("2", label)
        }
    }
}
