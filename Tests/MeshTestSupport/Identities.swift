public import MeshIdentity

/// Shorthand for identities in tests.
public func spiffe(_ namespace: String, _ serviceAccount: String, trustDomain: String = "cluster.local") -> SPIFFEID {
    // Test inputs are literals that are known to be valid.
    try! SPIFFEID(trustDomain: TrustDomain(trustDomain), namespace: namespace, serviceAccount: serviceAccount)
}
