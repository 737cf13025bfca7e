/// Lifeguard's version, printed by `lifeguard version` and exported as `lifeguard_build_info{version}`.
/// The one place it is written.
public let lifeguardVersion = "0.1.0"
