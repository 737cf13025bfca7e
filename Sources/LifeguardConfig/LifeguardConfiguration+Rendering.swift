import Upstream

extension LifeguardConfiguration {
    /// The effective configuration as TOML, every password masked, each value followed by a comment saying where it
    /// came from. Without passwords, the text loads back to an equal configuration.
    ///
    /// With `conversion` (`convert-config`, for a pgbouncer.ini), the text opens with what was not carried over and
    /// each value whose meaning differs from the PgBouncer setting it came from says how.
    public func rendered(conversion: Bool = false) -> String {
        var lines =
            conversion
            ? [
                "# Lifeguard \(lifeguardVersion) configuration converted from a PgBouncer configuration; passwords are "
                    + "masked (write them back, or keep them in auth_file).",
                "# After each value: where it came from, and how its meaning differs from PgBouncer's.",
            ]
            : [
                "# Effective Lifeguard \(lifeguardVersion) configuration; passwords are masked.",
                "# After each value: where it came from (default, file:line, environment variable or flag).",
            ]
        if conversion && !self.provenance.warnings.isEmpty {
            lines.append("#")
            lines.append("# Not carried over, or carried over with a difference:")
            lines += self.provenance.warnings.map { "#   \($0)" }
            lines.append("")
        }
        let notes = conversion ? self.provenance.pgbouncerNotes : [:]
        for setting in Setting.allCases {
            let origin = self.provenance.origins[setting.key] ?? .default
            if let value = self.renderedValue(of: setting) {
                lines.append(Self.line(setting.key, value, origin: origin, note: notes[setting.key]))
                if setting == .metricsWebConfig, let web = self.metricsWebConfig {
                    lines.append("# metrics endpoint: \(web.summary)")
                }
            } else {
                lines.append("# \(setting.key) is not set  # \(origin)")
            }
        }
        for database in self.databases {
            lines.append("")
            lines.append("[databases.\(Self.renderedKey(database.name))]")
            let values: [(String, String)] = [
                ("dsn", Self.string(database.dsn.redacted)),
                (Setting.poolMode.key, Self.string(database.poolMode.rawValue)),
                (Setting.poolSize.key, String(database.poolSize)),
                (Setting.minSize.key, String(database.minSize)),
                (Setting.maxOverflow.key, String(database.maxOverflow)),
                (Setting.poolTimeout.key, Self.string(Self.duration(database.poolTimeout))),
                (Setting.connectQuery.key, Self.string(database.connectQuery ?? "")),
                (Setting.maxDBConnections.key, String(database.maxDBConnections)),
            ]
            for (key, value) in values {
                let origin =
                    self.provenance.origins["databases.\(Self.renderedKey(database.name)).\(key)"] ?? .inherited
                // An inherited value's difference is told at the top level already.
                let note =
                    origin == .inherited ? nil : key == "dsn" ? notes["databases.\(database.name).dsn"] : notes[key]
                lines.append(Self.line(key, value, origin: origin, note: note))
            }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Every setting's value as `check-config` shows it (passwords masked), without TOML's quotes; nil when unset.
    /// For the admin console's `SHOW CONFIG`.
    public func shownValue(of setting: Setting) -> String? {
        guard let value = self.renderedValue(of: setting) else { return nil }
        guard value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 else { return value }
        return String(value.dropFirst().dropLast()).replacing("\\\"", with: "\"").replacing("\\\\", with: "\\")
    }

    private func renderedValue(of setting: Setting) -> String? {
        switch setting {
        case .listen: Self.string(self.listen.description)
        case .metricsListen: Self.string(self.metricsListen.description)
        case .metricsWebConfig: self.metricsWebConfig.map { Self.string($0.file) }
        case .unixSocketDir: self.unixSocketDir.map { Self.string($0) }
        case .unixSocketMode: Self.string("0" + String(self.unixSocketMode, radix: 8))
        case .unixSocketGroup: self.unixSocketGroup.map { Self.string($0) }
        case .upstream: self.upstream.map { Self.string($0.redacted) }
        case .poolMode: Self.string(self.poolMode.rawValue)
        case .poolSize: String(self.poolSize)
        case .minSize: String(self.minSize)
        case .maxOverflow: String(self.maxOverflow)
        case .poolTimeout: Self.string(Self.duration(self.poolTimeout))
        case .poolRecycle: Self.string(self.poolRecycle.map(Self.duration) ?? "off")
        case .prePing: String(self.prePing)
        case .prePingDelay: Self.string(Self.duration(self.prePingDelay))
        case .idleTimeout: Self.string(self.idleTimeout.map(Self.duration) ?? "off")
        case .leakThreshold: Self.string(self.leakThreshold.map(Self.duration) ?? "off")
        case .maxClientConn: String(self.maxClientConn)
        case .maxDBConnections: String(self.maxDBConnections)
        case .drainTimeout: Self.string(Self.duration(self.drainTimeout))
        case .resetQuery: Self.string(self.resetQuery ?? "")
        case .connectQuery: Self.string(self.connectQuery ?? "")
        case .logLevel: Self.string(self.logLevel.rawValue)
        case .authType: self.authType.map { Self.string($0.rawValue) }
        case .authFile: self.authFile.map { Self.string($0) }
        case .clientTLSSSLMode: Self.string(self.clientTLS.mode.rawValue)
        case .clientTLSCertFile: self.clientTLS.certFile.map { Self.string($0) }
        case .clientTLSKeyFile: self.clientTLS.keyFile.map { Self.string($0) }
        case .clientTLSCAFile: self.clientTLS.caFile.map { Self.string($0) }
        case .clientTLSProtocols:
            Self.string(self.clientTLS.protocols.sorted().map(\.rawValue).joined(separator: ","))
        case .clientTLSCiphers: Self.string(self.clientTLS.ciphers ?? "default")
        case .authUser: self.authUser.map { Self.string($0) }
        case .authQuery: Self.string(self.authQuery)
        case .authDbname: self.authDbname.map { Self.string($0) }
        case .adminUsers: Self.string(self.adminUsers.joined(separator: ","))
        case .statsUsers: Self.string(self.statsUsers.joined(separator: ","))
        }
    }

    private static func line(_ key: String, _ value: String, origin: SettingOrigin, note: String? = nil) -> String {
        "\(key) = \(value)  # \(origin)" + (note.map { "; \($0)" } ?? "")
    }

    /// A TOML basic string. URI passwords are masked once more, in case a value that is not a DSN holds one.
    private static func string(_ text: String) -> String {
        RawValue.quote(SecretScrubber.maskingURIPasswords(in: text))
    }

    private static func renderedKey(_ key: String) -> String {
        let bare =
            !key.isEmpty && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") }
        return bare ? key : RawValue.quote(key)
    }

    /// The largest whole unit: `1h`, `5m`, `30s`, `250ms`, else decimal seconds.
    static func duration(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        let micros = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        if micros == 0 { return "0s" }
        for (unit, suffix) in [(Int64(3_600_000_000), "h"), (60_000_000, "m"), (1_000_000, "s"), (1_000, "ms")]
        where micros % unit == 0 {
            return "\(micros / unit)\(suffix)"
        }
        let fraction = String(micros % 1_000_000)
        return "\(micros / 1_000_000).\(String(repeating: "0", count: 6 - fraction.count))\(fraction)"
    }
}
