extension Planner {
    /// The commands in the order that keeps traffic flowing: waypoints and their policies
    /// first (they take effect only for traffic that reaches them), then the namespace
    /// labels, then the removal of what ztunnel would misapply, then the restarts that
    /// take the sidecars away.
    mutating func writeSteps() {
        let directory = self.configuration.emitDirectory
        var steps: [MigrationPlan.Step] = []
        steps.append(.init(
            title: "Install ambient mode (istio-cni, ztunnel) and the Gateway API CRDs",
            commands: [
                "istioctl install --set profile=ambient --skip-confirmation",
                "kubectl get crd gateways.gateway.networking.k8s.io >/dev/null 2>&1 || kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml",
            ],
            notes: ["on a cluster that already runs Istio with sidecars, upgrade it to a revision with the ambient components instead"]
        ))
        var waypointCommands: [String] = []
        for waypoint in self.output.waypoints where !waypoint.existing {
            switch waypoint.scope {
            case .namespace:
                waypointCommands.append("istioctl waypoint apply -n \(waypoint.namespace) --name \(waypoint.name) --enroll-namespace --wait")
            case .service:
                waypointCommands.append("istioctl waypoint apply -n \(waypoint.namespace) --name \(waypoint.name) --wait")
                for service in waypoint.services {
                    waypointCommands.append("kubectl label service \(service) -n \(waypoint.namespace) istio.io/use-waypoint=\(waypoint.name)")
                }
            }
        }
        for waypoint in self.output.waypoints where waypoint.existing {
            waypointCommands.append(waypoint.scope == .namespace
                ? "kubectl label namespace \(waypoint.namespace) istio.io/use-waypoint=\(waypoint.name) --overwrite"
                : waypoint.services.map { "kubectl label service \($0) -n \(waypoint.namespace) istio.io/use-waypoint=\(waypoint.name)" }.joined(separator: " && "))
        }
        for (manifest, _) in self.analyses where manifest.kind == "ServiceEntry" && self.output.manual.contains(where: { $0.resource == manifest.id }) {
            waypointCommands.append("kubectl label serviceentry \(manifest.name) -n \(manifest.namespace) istio.io/use-waypoint=\(self.output.waypoints.first { $0.namespace == manifest.namespace }?.name ?? self.configuration.waypointName)")
        }
        if !waypointCommands.isEmpty {
            steps.append(.init(
                title: "Deploy the waypoints",
                commands: waypointCommands,
                notes: ["the Gateways are also written to \(directory)/<namespace>/gateway-<name>.yaml for GitOps"]
            ))
        }
        let generatedNamespaces = Array(Set(self.output.generated.filter { $0.resource.kind != "Gateway" }.map(\.resource.namespace))).sorted()
        if !generatedNamespaces.isEmpty {
            steps.append(.init(
                title: "Apply the waypoint policies and routes (targetRefs twins, HTTPRoutes, version Services)",
                commands: generatedNamespaces.map { namespace in
                    let files = self.output.generated.filter { $0.resource.namespace == namespace && $0.resource.kind != "Gateway" }.map { "-f \(directory)/\($0.path)" }
                    return "kubectl apply \(files.joined(separator: " "))"
                },
                notes: ["while sidecars are still running they keep enforcing the old resources; the twins act only on traffic through the waypoint"]
            ))
        }
        if !self.output.namespaces.isEmpty {
            steps.append(.init(
                title: "Enroll the namespaces in ambient mode",
                commands: self.output.namespaces.flatMap { change in
                    ["kubectl label namespace \(change.namespace) \(change.add.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")) --overwrite"]
                        + (change.remove.isEmpty ? [] : ["kubectl label namespace \(change.namespace) \(change.remove.map { "\($0)-" }.joined(separator: " "))"])
                },
                notes: ["pods that still have a sidecar are left alone by istio-cni until they restart"]
            ))
        }
        if !self.superseded.isEmpty {
            steps.append(.init(
                title: "Delete what the waypoints replace and what ambient ignores",
                commands: self.superseded.map { "kubectl delete \($0.kind.lowercased()) \($0.name) -n \($0.namespace)" },
                notes: ["do this before the restarts: a selector-based ALLOW policy with HTTP rules makes ztunnel deny every connection to the restarted pods"]
            ))
        }
        let restarts = self.output.namespaces.flatMap { change in
            Set(self.cluster.workloadKinds(in: change.namespace)).sorted().map { "kubectl rollout restart \($0.lowercased()) -n \(change.namespace)" }
        }
        if !restarts.isEmpty {
            steps.append(.init(
                title: "Restart the workloads without sidecars",
                commands: restarts,
                notes: ["afterwards every pod shows 1/1 containers (no istio-proxy), and `istioctl ztunnel-config workloads` lists them with protocol HBONE"]
            ))
        }
        self.output.steps = steps
    }
}
