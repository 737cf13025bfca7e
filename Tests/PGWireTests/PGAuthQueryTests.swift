import NIOCore
import Testing

@testable import PGWire

@Suite struct PGAuthQueryTests {
    static let query = "SELECT rolname, rolpassword FROM pg_authid WHERE rolname=$1"

    @Test func theUserNameIsAParameterNeverSplicedIntoTheSQL() throws {
        let user = "o'brien\"; DROP ROLE app; --"
        let messages = PGAuthQuery.messages(query: Self.query, user: user)
        #expect(messages.count == 7)
        #expect(
            messages[0]
                == .parse(
                    PGParse(
                        statementName: "",
                        query: "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true)"
                    )
                )
        )
        #expect(messages[3] == .parse(PGParse(statementName: "", query: Self.query)))
        #expect(messages.last == .sync)
        guard case .bind(let bind) = messages[4] else {
            Issue.record("expected the query's Bind")
            return
        }
        var parameters = bind.parameters
        #expect(parameters.readInteger(as: Int16.self) == 0)  // text formats
        #expect(parameters.readInteger(as: Int16.self) == 1)  // one parameter
        #expect(parameters.readInteger(as: Int32.self) == Int32(user.utf8.count))
        #expect(parameters.readString(length: user.utf8.count) == user)
        #expect(parameters.readInteger(as: Int16.self) == 0)  // text results
        #expect(parameters.readableBytes == 0)
        // Every message encodes and frames again.
        var buffer = ByteBuffer()
        for message in messages { message.encode(into: &buffer) }
        var count = 0
        while let frame = try PGFrameDecoder.frontend().decodeFrame(buffer: &buffer) {
            _ = try PGFrontendMessage(frame: frame)
            count += 1
        }
        #expect(count == 7)
    }

    static func frames(_ messages: [PGBackendMessage]) -> [PGFrame] {
        var buffer = ByteBuffer()
        for message in messages { message.encode(into: &buffer) }
        var frames: [PGFrame] = []
        while let frame = try! PGFrameDecoder().decodeFrame(buffer: &buffer) { frames.append(frame) }
        return frames
    }

    static func dataRow(_ columns: [String?]) -> PGBackendMessage {
        var body = ByteBuffer()
        body.writeInteger(Int16(columns.count))
        for column in columns {
            if let column {
                body.writeInteger(Int32(column.utf8.count))
                body.writeString(column)
            } else {
                body.writeInteger(Int32(-1))
            }
        }
        var frame = ByteBuffer()
        frame.writeInteger(PGBackendMessageType.dataRow)
        frame.writeInteger(Int32(body.readableBytes + 4))
        frame.writeBuffer(&body)
        return .other(try! PGFrameDecoder().decodeFrame(buffer: &frame)!)
    }

    static func simple(_ type: UInt8) -> PGBackendMessage {
        var frame = ByteBuffer()
        frame.writeInteger(type)
        frame.writeInteger(Int32(4))
        return .other(try! PGFrameDecoder().decodeFrame(buffer: &frame)!)
    }

    /// The server's answer: the set_config row and completion, then `rows` of the query, then ReadyForQuery.
    static func answer(_ rows: [[String?]], error: PGErrorFields? = nil) -> [PGFrame] {
        var messages: [PGBackendMessage] = [
            Self.simple(PGBackendMessageType.parseComplete), Self.simple(PGBackendMessageType.bindComplete),
            Self.dataRow(["pg_catalog, pg_temp"]), .commandComplete(tag: "SELECT 1"),
        ]
        if let error {
            messages.append(.errorResponse(error))
        } else {
            messages += [
                Self.simple(PGBackendMessageType.parseComplete), Self.simple(PGBackendMessageType.bindComplete),
            ]
            messages += rows.map { Self.dataRow($0) }
            messages.append(.commandComplete(tag: "SELECT \(rows.count)"))
        }
        messages.append(.readyForQuery(.idle))
        return Self.frames(messages)
    }

    static func read(_ frames: [PGFrame]) throws(PGAuthQueryError) -> PGAuthQuery.Outcome? {
        var response = PGAuthQuery.Response()
        for (index, frame) in frames.enumerated() {
            if let outcome = try response.receive(frame) {
                #expect(index == frames.count - 1, "an outcome before ReadyForQuery")
                return outcome
            }
        }
        return nil
    }

    static let secret =
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

    @Test func aRowWithASecretIsFound() throws {
        #expect(try Self.read(Self.answer([["alice", Self.secret]])) == .found(try PGAuthSecret(parsing: Self.secret)))
        #expect(
            try Self.read(Self.answer([["alice", "md520c46e3762c864548e296b33c3406aa9"]]))
                == .found(.md5(hash: "20c46e3762c864548e296b33c3406aa9"))
        )
        // The first row counts.
        #expect(
            try Self.read(Self.answer([["alice", Self.secret], ["alice", "md520c46e3762c864548e296b33c3406aa9"]]))
                == .found(try PGAuthSecret(parsing: Self.secret))
        )
    }

    @Test func noRowOrANullSecretIsNotFound() throws {
        #expect(try Self.read(Self.answer([])) == .notFound)
        #expect(try Self.read(Self.answer([["alice", nil]])) == .notFound)
    }

    @Test func problemsAreErrorsWithoutTheSecret() {
        let error = PGErrorFields.error(sqlState: "42P01", message: "relation \"pg_authid\" does not exist")
        #expect(throws: PGAuthQueryError.server(error)) { try Self.read(Self.answer([], error: error)) }
        #expect(throws: PGAuthQueryError.columns(1)) { try Self.read(Self.answer([[Self.secret]])) }
        do {
            _ = try Self.read(Self.answer([["alice", "SCRAM-SHA-256$4096:broken$" + String(Self.secret.suffix(40))]]))
            Issue.record("a damaged secret must fail")
        } catch {
            #expect(error.description.contains("damaged"))
            #expect(!error.description.contains(String(Self.secret.suffix(40))))
        }
    }
}
