import Testing

@testable import ProxyCore

struct SessionParametersTests {
    private func wanted(_ pairs: [(String, String)]) -> SessionParameters {
        var parameters = SessionParameters()
        for (name, value) in pairs { parameters[name] = value }
        return parameters
    }

    @Test("exactly the GUC_REPORT parameters a client can set are tracked, whatever else has their length")
    func reportedParameters() {
        let reported = [
            "TimeZone", "DateStyle", "IntervalStyle", "client_encoding", "application_name",
            "standard_conforming_strings",
        ]
        for name in reported { #expect(SessionParameters.isReported(name), "\(name)") }
        // What PostgreSQL 15 also reports, names of the same lengths, other spellings.
        let others = [
            "server_encoding", "server_version", "integer_datetimes", "is_superuser", "session_authorization",
            "default_transaction_read_only", "in_hot_standby", "timezone", "datestyle", "TimeZonX", "search_path",
            "client_encodinG", "application_nam", "", "standard_conforming_stringz",
        ]
        for name in others { #expect(!SessionParameters.isReported(name), "\(name)") }
    }

    @Test("a copy shares its storage; an equal value built apart, or a changed copy, does not")
    func identity() {
        let original = self.wanted([("DateStyle", "ISO, DMY"), ("TimeZone", "UTC")])
        var copy = original
        #expect(copy.isIdentical(to: original))
        let twin = self.wanted([("DateStyle", "ISO, DMY"), ("TimeZone", "UTC")])
        #expect(twin == original)
        #expect(!twin.isIdentical(to: original))
        copy["TimeZone"] = "Europe/Paris"
        #expect(!copy.isIdentical(to: original))
        #expect(original["TimeZone"] == "UTC")
    }

    @Test("a server reports the SETs a client needs, and nothing once it matches")
    func changes() {
        var server = ServerParameters(["DateStyle": "ISO, MDY", "TimeZone": "UTC"])
        let client = self.wanted([("DateStyle", "ISO, DMY"), ("TimeZone", "UTC")])
        #expect(server.changes(toMatch: client).map(\.name) == ["DateStyle"])
        server["DateStyle"] = "ISO, DMY"
        #expect(server.changes(toMatch: client).isEmpty)
        // The same (shared) wanted parameters again, and an equal copy built apart: both match.
        #expect(server.changes(toMatch: client).isEmpty)
        #expect(server.changes(toMatch: self.wanted([("DateStyle", "ISO, DMY"), ("TimeZone", "UTC")])).isEmpty)
    }

    @Test("a recorded match does not hide a later change on the server")
    func matchExpiresWhenTheServerChanges() {
        var server = ServerParameters(["TimeZone": "UTC"])
        let client = self.wanted([("TimeZone", "UTC")])
        #expect(server.changes(toMatch: client).isEmpty)
        // Another client's `SET TimeZone` was reported by the server (ParameterStatus).
        server["TimeZone"] = "Asia/Tokyo"
        #expect(server.changes(toMatch: client).map(\.value) == ["UTC"])
        // A parameter the server does not report, cleared by DISCARD ALL.
        var other = ServerParameters(["search_path": "app"])
        let wantsPath = self.wanted([("search_path", "app")])
        #expect(other.changes(toMatch: wantsPath).isEmpty)
        other["search_path"] = nil
        #expect(other.changes(toMatch: wantsPath).map(\.name) == ["search_path"])
    }
}

@Suite struct SessionParametersSharingTests {
    /// Setting a value a client already has (the server's spelling echoed back after a SET) must not give it storage
    /// of its own: a server connection that matched the shared storage would then compare values on every lease.
    @Test func anUnchangedValueKeepsTheSharedStorage() {
        var shared = SessionParameters()
        shared["application_name"] = "app"
        var client = shared
        client["application_name"] = "app"
        #expect(client.isIdentical(to: shared))
        client["application_name"] = "other"
        #expect(!client.isIdentical(to: shared))
    }
}
