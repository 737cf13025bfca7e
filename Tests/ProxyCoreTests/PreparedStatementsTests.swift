import NIOCore
import PGWire
import Testing

@testable import ProxyCore

/// The bookkeeping of named prepared statements in transaction mode, message by message.
@Suite struct PreparedStatementsTests {
    let parseComplete = PGBackendMessageType.parseComplete
    let closeComplete = PGBackendMessageType.closeComplete

    func frame(_ message: PGFrontendMessage) -> PGFrame {
        var buffer = ByteBuffer()
        message.encode(into: &buffer)
        let type = buffer.readInteger(as: UInt8.self)!
        buffer.moveReaderIndex(forwardBy: 4)
        return PGFrame(type: type, body: buffer)
    }

    func parse(_ name: String, _ query: String = "SELECT $1::int", types: [UInt32] = []) -> PGFrame {
        self.frame(.parse(PGParse(statementName: name, query: query, parameterTypes: types)))
    }

    func bind(_ statement: String, portal: String = "") -> PGFrame {
        var parameters = ByteBuffer()
        parameters.writeBytes([0, 0, 0, 1, 0, 0, 0, 1, 0x37, 0, 0])
        return self.frame(.bind(PGBind(portalName: portal, statementName: statement, parameters: parameters)))
    }

    var sync: PGFrame { self.frame(.sync) }

    var serverName: String { PreparedStatements.serverName(query: "SELECT $1::int", parameterTypes: []) }

    @Test func theServerNameDependsOnTheQueryAndTheParameterTypesOnly() {
        let name = PreparedStatements.serverName(query: "SELECT $1::int", parameterTypes: [23])
        #expect(name.hasPrefix("lifeguard_"))
        #expect(name.count == "lifeguard_".count + 32)
        #expect(name == PreparedStatements.serverName(query: "SELECT $1::int", parameterTypes: [23]))
        #expect(name != PreparedStatements.serverName(query: "SELECT $1::int", parameterTypes: [20]))
        #expect(name != PreparedStatements.serverName(query: "SELECT $1::int ", parameterTypes: [23]))
        #expect(name != PreparedStatements.serverName(query: "SELECT $1::int", parameterTypes: []))
    }

    @Test func aParseIsRenamedAndItsParseCompleteMarksTheStatementPrepared() {
        var statements = PreparedStatements()
        var prepared: ServerStatements = []
        let out = statements.outgoing(self.parse("_pg3_0"), prepared: prepared)
        #expect(out == [.parse(PGParse(statementName: self.serverName, query: "SELECT $1::int"))])
        #expect(statements.outgoing(self.bind("_pg3_0"), prepared: prepared)?.count == 1)
        #expect(statements.outgoing(self.sync, prepared: prepared) == nil)
        #expect(statements.reply(self.parseComplete, prepared: &prepared) == .relay)
        #expect(prepared == [self.serverName])
        statements.readyForQuery()
        #expect(statements.statements["_pg3_0"]?.serverName == self.serverName)
    }

    @Test func aClientsParseOfAStatementTheServerHasPreparesItAfresh() {
        // Prepared by another client, maybe before a schema change: the client's own Parse plans again.
        var statements = PreparedStatements()
        var prepared: ServerStatements = [self.serverName]
        let parse = PGParse(statementName: self.serverName, query: "SELECT $1::int", parameterTypes: [])
        #expect(
            statements.outgoing(self.parse("S_1"), prepared: prepared) == [
                .close(.statement(self.serverName)), .parse(parse),
            ]
        )
        #expect(statements.outgoing(self.sync, prepared: prepared) == nil)
        #expect(statements.reply(self.closeComplete, prepared: &prepared) == .swallow)
        #expect(prepared.isEmpty, "gone until the ParseComplete")
        #expect(statements.reply(self.parseComplete, prepared: &prepared) == .relay)
        #expect(prepared == [self.serverName])
        statements.readyForQuery()
        #expect(statements.statements["S_1"]?.serverName == self.serverName)
    }

    @Test func aSecondParseOfTheSameStatementInOneBatchIsAPlaceholder() {
        var statements = PreparedStatements()
        var prepared: ServerStatements = []
        _ = statements.outgoing(self.parse("S_1"), prepared: prepared)
        #expect(statements.outgoing(self.parse("S_2"), prepared: prepared) == [PreparedStatements.placeholder])
        _ = statements.outgoing(self.sync, prepared: prepared)
        #expect(statements.reply(self.parseComplete, prepared: &prepared) == .relay)
        #expect(statements.reply(self.closeComplete, prepared: &prepared) == .parseComplete)
        statements.readyForQuery()
        #expect(statements.statements["S_2"]?.serverName == self.serverName)
    }

    /// A client that prepared `name` in a finished transaction, now holding a new server connection.
    func preparedOnAnotherConnection(_ name: String) -> PreparedStatements {
        var statements = PreparedStatements()
        var first: ServerStatements = []
        _ = statements.outgoing(self.parse(name), prepared: first)
        _ = statements.outgoing(self.sync, prepared: first)
        _ = statements.reply(self.parseComplete, prepared: &first)
        statements.readyForQuery()
        statements.newServerConnection()
        return statements
    }

    @Test func aBindOnAnotherServerConnectionInjectsTheParseAndSwallowsItsReply() {
        var statements = PreparedStatements()
        var first: ServerStatements = []
        _ = statements.outgoing(self.parse("S_1"), prepared: first)
        _ = statements.outgoing(self.sync, prepared: first)
        #expect(statements.reply(self.parseComplete, prepared: &first) == .relay)
        statements.readyForQuery()

        // The next transaction gets a server connection that never saw the statement.
        statements.newServerConnection()
        var second: ServerStatements = []
        let out = statements.outgoing(self.bind("S_1", portal: "p"), prepared: second)
        var parameters = ByteBuffer()
        parameters.writeBytes([0, 0, 0, 1, 0, 0, 0, 1, 0x37, 0, 0])
        #expect(
            out == [
                .parse(PGParse(statementName: self.serverName, query: "SELECT $1::int")),
                .bind(PGBind(portalName: "p", statementName: self.serverName, parameters: parameters)),
            ]
        )
        // Describe right after: the injected Parse is on its way, no second one.
        #expect(
            statements.outgoing(self.frame(.describe(.statement("S_1"))), prepared: second) == [
                .describe(.statement(self.serverName))
            ]
        )
        _ = statements.outgoing(self.sync, prepared: second)
        #expect(statements.reply(self.parseComplete, prepared: &second) == .swallow)
        #expect(second == [self.serverName])
        statements.readyForQuery()

        // A third connection that has it, prepared after the client's Parse: nothing injected.
        var third = ServerStatements()
        third.insert(self.serverName, stamp: PreparedStatements.nextStamp())
        #expect(statements.outgoing(self.bind("S_1"), prepared: third)?.count == 1)
    }

    @Test func aCopyOlderThanTheClientsParseIsPreparedAgainBeforeUse() {
        // Another client prepared it on this connection before this client's Parse, maybe before a schema change.
        var older = ServerStatements()
        older.insert(self.serverName, stamp: PreparedStatements.nextStamp())
        var statements = self.preparedOnAnotherConnection("S_1")
        let out = statements.outgoing(self.bind("S_1"), prepared: older)
        let parse = PGParse(statementName: self.serverName, query: "SELECT $1::int", parameterTypes: [])
        #expect(out?.prefix(2) == [.close(.statement(self.serverName)), .parse(parse)])
        _ = statements.outgoing(self.sync, prepared: older)
        #expect(statements.reply(self.closeComplete, prepared: &older) == .swallow)
        #expect(statements.reply(self.parseComplete, prepared: &older) == .swallow)
        // Now newer than the client's Parse: trusted from here on.
        statements.readyForQuery()
        #expect(statements.outgoing(self.bind("S_1"), prepared: older)?.count == 1)
    }

    @Test func unnamedAndUnknownStatementsPassUnchanged() {
        var statements = PreparedStatements()
        var prepared: ServerStatements = []
        #expect(statements.outgoing(self.parse(""), prepared: prepared) == nil)
        #expect(statements.outgoing(self.bind(""), prepared: prepared) == nil)
        #expect(statements.outgoing(self.bind("never_parsed"), prepared: prepared) == nil)
        #expect(statements.outgoing(self.frame(.describe(.statement("never_parsed"))), prepared: prepared) == nil)
        #expect(statements.outgoing(self.frame(.execute(portalName: "", maxRows: 0)), prepared: prepared) == nil)
        #expect(statements.outgoing(self.frame(.close(.portal("p"))), prepared: prepared) == nil)
        #expect(statements.reply(self.parseComplete, prepared: &prepared) == .relay)
        #expect(statements.reply(self.closeComplete, prepared: &prepared) == .relay)
        #expect(prepared.isEmpty)
    }

    @Test func aNamedPortalDoesNotHideTheStatementItBinds() {
        var statements = PreparedStatements()
        var prepared: ServerStatements = []
        _ = statements.outgoing(self.parse("s1"), prepared: prepared)
        #expect(statements.reply(self.parseComplete, prepared: &prepared) == .relay)
        // The portal's name comes first; the statement after it is still found and renamed.
        let renamed = statements.outgoing(self.bind("s1", portal: "p1"), prepared: prepared)
        #expect(renamed?.count == 1)
        if case .bind(let bind)? = renamed?.first {
            #expect(bind.portalName == "p1")
            #expect(bind.statementName == self.serverName)
        } else {
            Issue.record("expected a renamed Bind, got \(String(describing: renamed))")
        }
        #expect(statements.outgoing(self.bind("", portal: "p1"), prepared: prepared) == nil)
        #expect(statements.outgoing(self.frame(.describe(.statement(""))), prepared: prepared) == nil)
        #expect(statements.outgoing(self.frame(.describe(.portal("p1"))), prepared: prepared) == nil)
        // Closing the unnamed statement and a portal: relayed, and their CloseCompletes relayed in order.
        #expect(statements.outgoing(self.frame(.close(.statement(""))), prepared: prepared) == nil)
        #expect(statements.outgoing(self.frame(.close(.portal("p1"))), prepared: prepared) == nil)
        #expect(statements.reply(self.closeComplete, prepared: &prepared) == .relay)
        #expect(statements.reply(self.closeComplete, prepared: &prepared) == .relay)
        #expect(statements.statements["s1"]?.serverName == self.serverName)
    }

    @Test func closingAStatementForgetsItButLeavesItOnTheServer() {
        var statements = PreparedStatements()
        var prepared: ServerStatements = [self.serverName]
        _ = statements.outgoing(self.parse("S_1"), prepared: prepared)
        let close = statements.outgoing(self.frame(.close(.statement("S_1"))), prepared: prepared)
        #expect(close == [PreparedStatements.placeholder])
        _ = statements.outgoing(self.sync, prepared: prepared)
        #expect(statements.reply(self.closeComplete, prepared: &prepared) == .swallow)
        #expect(statements.reply(self.parseComplete, prepared: &prepared) == .relay)
        #expect(statements.reply(self.closeComplete, prepared: &prepared) == .relay)
        statements.readyForQuery()
        #expect(statements.statements.isEmpty)
        #expect(prepared == [self.serverName])
        // Now unknown to the client: PostgreSQL gives its own "does not exist".
        #expect(statements.outgoing(self.bind("S_1"), prepared: prepared) == nil)
    }

    @Test func afterAnErrorWhatTheServerSkippedIsUndoneUpToItsSyncOnly() {
        var statements = PreparedStatements()
        var prepared: ServerStatements = []
        let other = PreparedStatements.serverName(query: "SELECT 2", parameterTypes: [])
        _ = statements.outgoing(self.parse("kept", "SELECT 2"), prepared: prepared)
        _ = statements.outgoing(self.sync, prepared: prepared)
        #expect(statements.reply(self.parseComplete, prepared: &prepared) == .relay)
        statements.readyForQuery()
        // First batch: the Parse fails, the server skips the Close; second batch, pipelined, succeeds.
        _ = statements.outgoing(self.parse("bad", "SELEC 1"), prepared: prepared)
        _ = statements.outgoing(self.frame(.close(.statement("kept"))), prepared: prepared)
        _ = statements.outgoing(self.sync, prepared: prepared)
        _ = statements.outgoing(self.parse("good"), prepared: prepared)
        _ = statements.outgoing(self.sync, prepared: prepared)

        statements.readyForQuery()  // ErrorResponse, then ReadyForQuery of the first Sync.
        #expect(statements.statements["bad"] == nil)
        #expect(statements.statements["kept"]?.serverName == other)
        #expect(statements.statements["good"]?.serverName == self.serverName)
        #expect(statements.reply(self.parseComplete, prepared: &prepared) == .relay)
        #expect(prepared == [other, self.serverName])
        statements.readyForQuery()
        #expect(statements.statements["good"] != nil)
        let badName = PreparedStatements.serverName(query: "SELEC 1", parameterTypes: [])
        #expect(!prepared.contains(badName))
    }

    @Test func aFailedInjectedParseLeavesTheStatementUnpreparedAndInjectsAgainNextTime() {
        var statements = self.preparedOnAnotherConnection("S_1")
        let prepared: ServerStatements = []
        #expect(statements.outgoing(self.bind("S_1"), prepared: prepared)?.count == 2)
        _ = statements.outgoing(self.sync, prepared: prepared)
        statements.readyForQuery()  // the injected Parse failed
        #expect(prepared.isEmpty)
        #expect(statements.outgoing(self.bind("S_1"), prepared: prepared)?.count == 2)
    }

    @Test func deallocateAllAndDiscardAllClearTheServer() {
        #expect(PreparedStatements.clearsAll(commandTag: "DEALLOCATE ALL"))
        #expect(PreparedStatements.clearsAll(commandTag: "DISCARD ALL"))
        #expect(!PreparedStatements.clearsAll(commandTag: "DEALLOCATE"))
        #expect(!PreparedStatements.clearsAll(commandTag: "DISCARD PLANS"))
    }
}
