extension Planner {
    /// The commands in the order that keeps traffic flowing: waypoints and their policies
    /// first (they take effect only for traffic that reaches them, and the via-waypoint
    /// companions let the waypoint reach pods that still have sidecars), then the
    /// namespace labels, then the restarts that take the sidecars away, then the removal of
    /// what the waypoints replace.
    mutating func writeSteps() {
        let directory = self.configuration.emitDirectory
        var steps: [MigrationPlan.Step] = []
        steps.append(.init(
            title: "Add ambient mode (istio-cni, ztunnel) to the Istio install, and the Gateway API CRDs",
            commands: [
                "kubectl get crd gateways.gateway.networking.k8s.io >/dev/null 2>&1 || kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.2.1/standard-install.yaml",
                "ISTIO_VERSION=$(kubectl get deployment istiod -n istio-system -o jsonpath='{.spec.template.spec.containers[0].image}' | sed 's/.*://')",
                "helm upgrade istiod istio/istiod -n istio-system --version \"$ISTIO_VERSION\" --reuse-values --set profile=ambient --wait",
                "helm install istio-cni istio/cni -n istio-system --version \"$ISTIO_VERSION\" --set profile=ambient --wait",
                "helm install ztunnel istio/ztunnel -n istio-system --version \"$ISTIO_VERSION\" --wait",
            ],
            notes: [
                "Helm shown; with istioctl, run `istioctl install -f <your IstioOperator> --set profile=ambient` — a bare `--set profile=ambient` drops components your install has, such as istio-ingressgateway",
            ]
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
            if waypoint.scope == .namespace {
                waypointCommands.append("kubectl label namespace \(waypoint.namespace) istio.io/use-waypoint=\(waypoint.name) --overwrite")
            } else {
                waypointCommands += waypoint.services.map { "kubectl label service \($0) -n \(waypoint.namespace) istio.io/use-waypoint=\(waypoint.name)" }
            }
        }
        let ingress = self.output.waypoints.flatMap { waypoint in
            waypoint.ingressServices.map { "kubectl label service \($0) -n \(waypoint.namespace) istio.io/ingress-use-waypoint=true" }
        }
        waypointCommands += ingress
        for (manifest, _) in self.analyses where manifest.kind == "ServiceEntry" && self.output.manual.contains(where: { $0.resource == manifest.id }) {
            waypointCommands.append("kubectl label serviceentry \(manifest.name) -n \(manifest.namespace) istio.io/use-waypoint=\(self.output.waypoints.first { $0.namespace == manifest.namespace }?.name ?? self.configuration.waypointName)")
        }
        if !waypointCommands.isEmpty {
            steps.append(.init(
                title: "Deploy the waypoints",
                commands: waypointCommands,
                notes: ["the Gateways are also written to \(directory)/<namespace>/gateway-<name>.yaml for GitOps"]
                    + (ingress.isEmpty ? [] : ["istio.io/ingress-use-waypoint: ingress gateways send to these Services' pods directly otherwise, skipping the waypoint's policies (and the via-waypoint companions would refuse them)"])
            ))
        }
        let generatedNamespaces = Array(Set(self.output.generated.filter { $0.resource.kind != "Gateway" }.map(\.resource.namespace))).sorted()
        if !generatedNamespaces.isEmpty {
            steps.append(.init(
                title: "Apply the waypoint policies and routes (targetRefs twins, via-waypoint companions, HTTPRoutes, version Services)",
                commands: generatedNamespaces.map { namespace in
                    let files = self.output.generated.filter { $0.resource.namespace == namespace && $0.resource.kind != "Gateway" }.map { "-f \(directory)/\($0.path)" }
                    return "kubectl apply \(files.joined(separator: " "))"
                },
                notes: ["while sidecars are still running they keep enforcing the old resources; the twins act only on traffic through the waypoint, and the companions only add the waypoint's identity to who may connect"]
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
        if !self.superseded.isEmpty {
            steps.append(.init(
                title: "Delete what the waypoints replace and what ambient ignores",
                commands: self.superseded.map { "kubectl delete \($0.kind.lowercased()) \($0.name) -n \($0.namespace)" },
                notes: [
                    "after the restarts: until then pods with sidecars enforce the originals; at ztunnel an original ALLOW with HTTP rules allows nothing, so only its via-waypoint companion lets traffic in",
                    "istiod releases that match an emptied DENY clause to every connection deny all traffic to restarted pods until such a DENY policy is deleted: on those, delete the DENY policies right before the restarts",
                ]
            ))
        }
        self.output.steps = steps
    }
}
