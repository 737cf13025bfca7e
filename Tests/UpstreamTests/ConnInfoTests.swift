import Foundation
import Testing

@testable import Upstream

@Suite struct ConnInfoTests {
    @Test func parsesAURI() throws {
        let info = try ConnInfo(
            "postgresql://app:s3cret@db.example.com:6543/orders?sslmode=require&application_name=lg"
        )
        #expect(info.host == "db.example.com")
        #expect(info.port == 6543)
        #expect(info.user == "app")
        #expect(info.password == "s3cret")
        #expect(info.dbname == "orders")
        #expect(info.sslmode == "require")
        #expect(info["application_name"] == "lg")
        #expect(info.option("host")?.source == .connectionString)
    }

    /// libpq 15 does not know PostgreSQL 17's `sslnegotiation`: Lifeguard reads it itself and keeps it from libpq.
    @Test func readsSSLNegotiationThatLibpq15DoesNotKnow() throws {
        for text in [
            "postgresql://app@db:5432/orders?sslnegotiation=direct&sslmode=require",
            "postgresql://app@db:5432/orders?sslmode=require&sslnegotiation=direct",
            "host=db sslnegotiation=direct sslmode=require dbname=orders",
            "sslnegotiation = 'direct' host=db sslmode=require dbname=orders",
        ] {
            let info = try ConnInfo(text)
            #expect(info["sslnegotiation"] == "direct", "\(text)")
            #expect(info.sslmode == "require", "\(text)")
            #expect(info.dbname == "orders", "\(text)")
            #expect(info.redacted.contains("sslnegotiation=direct"), "\(text)")
            #expect(!info.unredactedConnectionString.contains("sslnegotiation"), "\(text)")
        }
    }

    @Test func parsesKeyValuePairs() throws {
        let info = try ConnInfo("host=127.0.0.1 port=5433 user=app password='p a\\'ss' dbname=orders")
        #expect(info.host == "127.0.0.1")
        #expect(info.port == 5433)
        #expect(info.user == "app")
        #expect(info.password == "p a'ss")
        #expect(info.dbname == "orders")
        #expect(info.values["password"] == "p a'ss")
    }

    @Test func decodesPercentEncodingInURIs() throws {
        let info = try ConnInfo("postgres://us%40er:p%2Fw@%2Fvar%2Frun%2Fpostgresql/db")
        #expect(info.user == "us@er")
        #expect(info.password == "p/w")
        #expect(info.host == "/var/run/postgresql")
    }

    @Test func fillsUnsetKeysFromLibpqDefaultsOrTheEnvironment() throws {
        let info = try ConnInfo("dbname=orders")
        let environment = ProcessInfo.processInfo.environment
        // PQconndefaults: PGPORT when set, else the compiled-in 5432; PGUSER when set, else the OS user name.
        if let port = environment["PGPORT"] {
            #expect(
                info.option("port")
                    == .init(keyword: "port", value: port, source: .environment("PGPORT"), isSecret: false)
            )
        } else {
            #expect(
                info.option("port") == .init(keyword: "port", value: "5432", source: .libpqDefault, isSecret: false)
            )
        }
        let expectedUser = environment["PGUSER"] ?? String(cString: getpwuid(geteuid()).pointee.pw_name)
        #expect(info.user == expectedUser)
        #expect(info.option("sslmode")?.value == environment["PGSSLMODE"] ?? "prefer")
        #expect(info.option("dbname")?.source == .connectionString)
        #expect(info.explicitOptions.map(\.keyword) == ["dbname"])
    }

    @Test func theStringWinsOverDefaults() throws {
        let info = try ConnInfo("port=7777 sslmode=disable")
        #expect(info.option("port")?.source == .connectionString)
        #expect(info.port == 7777)
        #expect(info.sslmode == "disable")
    }

    @Test func portIsNilWhenNotASingleNumber() throws {
        // libpq accepts these at parse time and fails at connect time; the typed accessor says "no port".
        #expect(try ConnInfo("host=a,b port=1,2").port == nil)
        #expect(try ConnInfo("port=abc").port == nil)
        #expect(try ConnInfo("port=abc")["port"] == "abc")
    }

    @Test(arguments: [
        ("postgresql://u:s3cret@h/db?foo=1", "invalid URI query parameter: \"foo\""),
        ("host=x bogus_key=1", "invalid connection option \"bogus_key\""),
        ("host=x port", "missing \"=\" after \"port\" in connection info string"),
        ("host='x", "unterminated quoted string in connection info string"),
    ])
    func badStringsGiveLibpqsMessage(input: String, message: String) {
        #expect(throws: ConnInfoError.self) { try ConnInfo(input) }
        do {
            _ = try ConnInfo(input)
        } catch {
            #expect(error.message == message)
            #expect(error.description == "invalid connection string: \(message)")
        }
    }

    @Test(arguments: [
        "postgresql://u:s3cret@[::1/db",
        "postgresql://u:s3cr%zzet@h/db",
        "host=x password=s3cret bogus",
        "host=x password=s3cret bogus port",
        "postgresql://u@h/db?password=s3c%00ret",
        "postgresql://u:s3cret@h:5432/db?sslmode=require&foo",
    ])
    func errorsNeverContainThePassword(input: String) {
        do {
            _ = try ConnInfo(input)
            Issue.record("\(input) should not parse")
        } catch {
            #expect(!error.message.contains("s3c"), "\(error.message)")
            #expect(!"\(error)".contains("s3c"))
        }
    }

    @Test func redactedMasksEveryPassword() throws {
        let info = try ConnInfo("postgresql://app:s3cret@db:5432/orders?sslpassword=k3y&sslmode=require")
        #expect(info.redacted.contains("password=********"))
        #expect(info.redacted.contains("sslpassword=********"))
        #expect(info.redacted.contains("host=db"))
        #expect(info.redacted.contains("sslmode=require"))
        #expect(!info.redacted.contains("s3cret"))
        #expect(!info.redacted.contains("k3y"))
        #expect("\(info)" == info.redacted)
        #expect(!String(describing: [info]).contains("s3cret"))
    }

    @Test func redactedLeavesOutCompiledDefaults() throws {
        let info = try ConnInfo("host=db dbname='my db'")
        let environmentKeys = info.options.filter { if case .environment = $0.source { true } else { false } }
        #expect(info.redacted.hasPrefix(environmentKeys.isEmpty ? "dbname='my db' host=db" : ""))
        #expect(!info.redacted.contains("krbsrvname"))
    }

    @Test func unredactedStringRoundTrips() throws {
        let info = try ConnInfo("postgresql://app:p%20w'x@db:5432/orders")
        let again = try ConnInfo(info.unredactedConnectionString)
        #expect(again == info)
        #expect(again.password == "p w'x")
    }
}
