import NIOCore
import PGWire
import PoolCore
import ProxyCore
import Testing

/// Every transition of the client session, action for action, without event loops.
@Suite struct ClientSessionTests {
    // MARK: Startup and login

    @Test func transactionModeGreetsFromTheCachedParametersWithoutAServer() {
        var harness = SessionHarness()
        #expect(
            harness.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) }
                == ["admit(app, db)"]
        )
        let login = harness.login(mode: .transaction)
        #expect(harness.send { $0.admissionDecided(.admitted(login), into: &$1) } == ["flushClient", "activity(idle)"])
        let messages = harness.clientMessages()
        #expect(messages.first == .authentication(.ok))
        #expect(messages.contains(.parameterStatus(name: "client_encoding", value: "UTF8")))
        #expect(messages.contains(.backendKeyData(processID: 7, secretKey: 8)))
        #expect(messages.last == .readyForQuery(.idle))
        guard case .ready(.none) = harness.session.state else {
            Issue.record("not ready: \(harness.session.state)")
            return
        }
    }

    @Test(arguments: [PoolMode.transaction, .session])
    func greetingsFromThePoolsCacheAreTheGreetingsEncodedAlone(mode: PoolMode) {
        // Clients logging in one after another through one cache, in turn asking for the same and other parameters.
        let cache = GreetingCache()
        let startups: [[(String, String)]] = [
            [("application_name", "billing")], [("application_name", "billing")], [("application_name", "reports")],
            [("application_name", "billing"), ("client_encoding", "UTF8")], [("application_name", "billing")], [],
        ]
        // The server reports application_name, so the client's value shows in its greeting.
        let server = SessionHarness.parameters + [(name: "application_name", value: "")]
        for options in startups {
            var greeted: [[PGBackendMessage]] = []
            for greetings in [nil, cache] {
                var harness = SessionHarness()
                let startup = PGStartupMessage(user: "app", database: "app", options: options)
                _ = harness.send { $0.startupReceived(startup, into: &$1) }
                var login = harness.login(mode: mode)
                login.cachedParameters = server
                login.greetings = greetings
                _ = harness.send { $0.admissionDecided(.admitted(login), into: &$1) }
                if mode == .session {
                    _ = harness.requested(token: 1, request: 1)
                    _ = harness.grant(token: 1, request: 1, server: "a")
                }
                greeted.append(harness.clientMessages())
            }
            #expect(greeted[0] == greeted[1], "\(mode) \(options)")
            #expect(greeted[0].contains(.readyForQuery(.idle)), "\(greeted[0])")
            if mode == .transaction {
                #expect(Self.reported(greeted[1], "application_name") == (options.first?.1 ?? ""), "\(greeted[1])")
            }
        }
    }

    @Test func refusalsAreFatalWithTheirSQLStateAndClose() {
        var harness = SessionHarness()
        #expect(
            harness.send { $0.startupReceived(PGStartupMessage(parameters: []), into: &$1) }
                == ["rejected(protocol)", "close"]
        )
        #expect(harness.clientMessages().first.flatMap(Self.sqlState) == PGSQLState.invalidAuthorizationSpecification)

        for (admission, sqlState, actions) in [
            (
                ClientAdmission.tooManyClients(max: 3), PGSQLState.tooManyConnections,
                ["rejected(maxClientConn)", "close"]
            ),
            (.noRoute(database: "x", message: "no"), PGSQLState.invalidCatalogName, ["close"]),
            (.draining, PGSQLState.adminShutdown, ["close"]),
            (.lookupFailed(message: "auth_query failed"), PGSQLState.connectionFailure, ["close"]),
        ] {
            var harness = SessionHarness()
            _ = harness.send { $0.startupReceived(PGStartupMessage(user: "app", database: "x"), into: &$1) }
            #expect(harness.send { $0.admissionDecided(admission, into: &$1) } == actions)
            #expect(harness.clientMessages().first.flatMap(Self.sqlState) == sqlState)
            #expect(harness.session.isClosed)
        }
    }

    /// Admission may be decided later (an auth_query lookup): meanwhile the session waits for it alone.
    @Test func admissionIsAwaitedInAdmitting() {
        var harness = SessionHarness()
        #expect(
            harness.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) }
                == ["admit(app, db)"]
        )
        guard case .admitting = harness.session.state else {
            Issue.record("not admitting: \(harness.session.state)")
            return
        }
        // Nothing else moves it: a second StartupMessage, a frame.
        #expect(harness.send { $0.startupReceived(PGStartupMessage(user: "x", database: "y"), into: &$1) } == [])
        #expect(harness.frames([.password("early")]) == [])
        guard case .admitting = harness.session.state else {
            Issue.record("left admitting: \(harness.session.state)")
            return
        }
        #expect(harness.clientMessages().isEmpty)
        let login = harness.login(mode: .transaction)
        #expect(harness.send { $0.admissionDecided(.admitted(login), into: &$1) } == ["flushClient", "activity(idle)"])
        // Decided once: a late second answer changes nothing.
        #expect(harness.send { $0.admissionDecided(.draining, into: &$1) } == [])
        guard case .ready(.none) = harness.session.state else {
            Issue.record("not ready: \(harness.session.state)")
            return
        }
    }

    @Test func aClientThatLeavesOrADrainWhileAdmittingEndsItThere() {
        var left = SessionHarness()
        _ = left.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) }
        #expect(left.send { $0.clientClosed(into: &$1) } == [])
        #expect(left.session.isClosed)
        let late = left.login(mode: .session)
        #expect(left.send { $0.admissionDecided(.admitted(late), into: &$1) } == [])
        #expect(left.clientMessages().isEmpty)

        var drained = SessionHarness()
        _ = drained.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) }
        #expect(drained.send { $0.drain(into: &$1) } == ["close"])
        #expect(drained.clientMessages().first.flatMap(Self.sqlState) == PGSQLState.adminShutdown)
        let afterDrain = drained.login(mode: .session)
        #expect(drained.send { $0.admissionDecided(.admitted(afterDrain), into: &$1) } == [])
    }

    /// The credential a login proved goes to the I/O layer before the first lease, which may need it to open the
    /// client's server connection; a failed login leaves none.
    @Test func aProvenSecretIsPassedThroughBeforeTheFirstLease() throws {
        let hash = String(PGMD5.storedHash(password: "pencil", user: "app").dropFirst(3))
        for (password, expected) in [
            ("pencil", ["passThrough(md5 secret (hidden))", "activity(waiting)", "requestLease(1)"]),
            ("pen", ["rejected(auth)", "authenticationFailed(app, wrong_password)", "close"]),
        ] {
            var harness = SessionHarness()
            _ = harness.send { $0.startupReceived(PGStartupMessage(user: "app", database: "db"), into: &$1) }
            var login = harness.login(mode: .session)
            login.authentication = PGServerAuthenticationStateMachine(
                method: .md5,
                user: "app",
                secret: .md5(hash: hash)
            )
            #expect(harness.send { $0.admissionDecided(.admitted(login), into: &$1) } == ["flushClient"])
            guard case .authentication(.md5Password(let salt))? = harness.clientMessages().first else {
                Issue.record("expected an md5 challenge")
                return
            }
            let response = PGMD5.passwordMessage(password: password, user: "app", salt: salt)
            #expect(harness.frames([.password(response)]) == expected)
        }
    }

    @Test func sessionModeHoldsAServerFromLoginAndGreetsWithItsParameters() {
        var harness = SessionHarness()
        #expect(harness.start(mode: .session) == ["activity(waiting)", "requestLease(1)"])
        #expect(harness.requested(token: 1, request: 5) == [])
        #expect(
            harness.grant(token: 1, request: 5, server: "a")
                == ["cancelTarget(a)", "activity(active)", "attach(R5)", "flushClient"]
        )
        #expect(harness.clientMessages().last == .readyForQuery(.idle))
        // The session ends with Terminate: the server goes back reset.
        #expect(harness.frames([.terminate]) == ["cancelTarget(nil)", "giveBack(R5, reset(DISCARD ALL))", "close"])
        #expect(harness.session.isClosed)
    }

    @Test func sessionModeAppliesTheClientsParametersBeforeTheGreeting() {
        var harness = SessionHarness()
        _ = harness.start(mode: .session)
        _ = harness.requested(token: 1, request: 5)
        #expect(
            harness.grant(token: 1, request: 5, server: "a", changes: [("DateStyle", "German")])
                == ["cancelTarget(a)", "activity(active)", "runCommand(R5, SET \"DateStyle\" TO 'German')"]
        )
        #expect(harness.clientMessages().first == .authentication(.ok))
        let done = harness.send {
            $0.serverCommandFinished(
                .applyParameters([("DateStyle", "German")]),
                .finished(error: nil, status: .idle, reported: [("DateStyle", "German, DMY")]),
                into: &$1
            )
        }
        #expect(done == ["attach(R5)", "flushClient"])
        #expect(harness.clientMessages().contains(.parameterStatus(name: "DateStyle", value: "German, DMY")))
    }

    @Test func transactionModeWithoutCachedParametersBorrowsAServerOnceToLearnThem() {
        var harness = SessionHarness()
        #expect(harness.start(mode: .transaction, cached: false) == ["activity(waiting)", "requestLease(1)"])
        _ = harness.requested(token: 1, request: 2)
        #expect(
            harness.grant(token: 1, request: 2, server: "a")
                == ["giveBack(R2, release)", "flushClient", "activity(idle)"]
        )
        #expect(harness.clientMessages().last == .readyForQuery(.idle))
    }

    // MARK: Relaying in transaction mode

    @Test func aTransactionLeasesRelaysAndGivesBackOnReadyForQueryIdle() {
        var harness = SessionHarness()
        harness.start(mode: .transaction)
        _ = harness.clientMessages()
        #expect(harness.frames([.query("SELECT 1")]) == ["activity(waiting)", "requestLease(1)"])
        #expect(harness.requested(token: 1, request: 9) == [])
        #expect(
            harness.grant(token: 1, request: 9, server: "a")
                == ["cancelTarget(a)", "activity(active)", "attach(R9)", "flushServer(R9)"]
        )
        #expect(Frames.frontendTypes(harness.session.takeServerOutput()) == ["Q"])
        #expect(
            harness.server(9, Frames.result + [Frames.ready()])
                == ["flushClient", "cancelTarget(nil)", "activity(idle)", "giveBack(R9, release)", "count(1, 1)"]
        )
        #expect(harness.clientMessages() == Frames.result + [Frames.ready()])
    }

    @Test func aTransactionBlockKeepsTheServerUntilItEnds() {
        var harness = SessionHarness()
        harness.relaying("BEGIN", mode: .transaction, request: 1)
        #expect(harness.server(1, [.commandComplete(tag: "BEGIN"), Frames.ready(.inTransaction)]) == ["flushClient"])
        #expect(harness.frames([.query("COMMIT")]) == [])
        #expect(harness.send { $0.clientReadComplete(into: &$1) } == ["flushServer(R1)"])
        #expect(
            harness.server(1, [.commandComplete(tag: "COMMIT"), Frames.ready()]).suffix(2)
                == ["giveBack(R1, release)", "count(1, 2)"]
        )
    }

    @Test func anUnansweredRequestOrAnOpenTransactionIsNeverReleasedAsItIs() {
        // The client leaves with a query in flight: the server still owes replies, so it is closed.
        var busy = SessionHarness()
        busy.relaying("SELECT pg_sleep(10)", mode: .transaction, request: 1)
        #expect(
            busy.send { $0.clientClosed(into: &$1) } == ["count(0, 1)", "cancelTarget(nil)", "giveBack(R1, discard)"]
        )

        // The client leaves inside a transaction: rolled back first.
        var open = SessionHarness()
        open.relaying("BEGIN", mode: .transaction, request: 1)
        _ = open.server(1, [.commandComplete(tag: "BEGIN"), Frames.ready(.inTransaction)])
        #expect(
            open.frames([.terminate]) == ["count(0, 1)", "cancelTarget(nil)", "giveBack(R1, reset(ROLLBACK))", "close"]
        )
    }

    // MARK: The two double releases, deterministically

    /// A write of the last ReadyForQuery fails at once and closes the client: the I/O layer feeds `clientClosed`
    /// only after the actions of the ReadyForQuery ran, which already gave the server back.
    @Test func aWriteThatFailsJustAfterTheLastReadyForQueryGivesTheServerBackOnce() {
        var harness = SessionHarness()
        harness.relaying("SELECT 1", mode: .transaction, request: 3)
        let relayed = harness.server(3, Frames.result + [Frames.ready()])
        #expect(relayed.filter { $0.hasPrefix("giveBack") } == ["giveBack(R3, release)"])
        #expect(relayed.firstIndex(of: "flushClient")! < relayed.firstIndex(of: "giveBack(R3, release)")!)
        // The failed write's consequence, fed afterwards.
        #expect(harness.send { $0.clientClosed(into: &$1) } == [])
        #expect(harness.session.isClosed)
        // Late server frames for that lease go nowhere.
        #expect(harness.server(3, [Frames.ready()]) == [])
    }

    /// Closed while being greeted (the greeting's write failed): the server goes back once, and the session stays
    /// closed instead of becoming ready again.
    @Test func aClientClosedWhileBeingGreetedGivesBackOnceAndStaysClosed() {
        var session = SessionHarness()
        session.start(mode: .session)
        _ = session.requested(token: 1, request: 4)
        let greeting = session.grant(token: 1, request: 4, server: "a")
        #expect(greeting.contains("flushClient"))
        #expect(
            session.send { $0.clientClosed(into: &$1) } == ["cancelTarget(nil)", "giveBack(R4, reset(DISCARD ALL))"]
        )
        #expect(session.frames([.query("SELECT 1")]) == [])
        #expect(session.session.isClosed)

        var borrowed = SessionHarness()
        borrowed.start(mode: .transaction, cached: false)
        _ = borrowed.requested(token: 1, request: 4)
        #expect(borrowed.grant(token: 1, request: 4, server: "a").filter { $0.hasPrefix("giveBack") }.count == 1)
        #expect(borrowed.send { $0.clientClosed(into: &$1) } == [])
        #expect(borrowed.frames([.query("SELECT 1")]) == [])
    }

    @Test func aLeaseThatComesAfterTheClientLeftGoesStraightBack() {
        var harness = SessionHarness()
        harness.start(mode: .transaction)
        _ = harness.frames([.query("SELECT 1")])
        _ = harness.requested(token: 1, request: 6)
        #expect(harness.send { $0.clientClosed(into: &$1) } == ["cancelLease(R6)"])
        #expect(harness.grant(token: 1, request: 6, server: "a") == ["giveBack(R6, release)"])

        // Left before the request was even known: cancelled when it is.
        var early = SessionHarness()
        early.start(mode: .transaction)
        _ = early.frames([.query("SELECT 1")])
        _ = early.send { $0.clientClosed(into: &$1) }
        #expect(early.requested(token: 1, request: 8) == ["cancelLease(R8)"])
    }

    // MARK: Errors

    @Test func theServersFatalReachesTheClientAsSentAndEndsTheSession() {
        var harness = SessionHarness()
        harness.relaying("SELECT pg_sleep(10)", mode: .transaction, request: 2)
        _ = harness.clientMessages()
        let fatal = PGErrorFields.error(
            sqlState: PGSQLState.adminShutdown,
            message: "terminating connection due to administrator command",
            severity: .fatal
        )
        #expect(harness.server(2, [.errorResponse(fatal)]) == ["flushClient"])
        #expect(harness.clientMessages() == [.errorResponse(fatal)])
        #expect(
            harness.send { $0.serverClosed(RequestID(2), into: &$1) }
                == ["cancelTarget(nil)", "giveBack(R2, discard)", "activity(idle)", "count(0, 1)", "close"]
        )
        #expect(harness.clientMessages() == [], "nothing is added to the server's own words")
    }

    @Test func aServerThatClosesSilentlyMidQueryIs08006AndTheClientGoesOn() {
        var harness = SessionHarness()
        harness.relaying("SELECT 1", mode: .transaction, request: 2)
        _ = harness.clientMessages()
        let actions = harness.send { $0.serverClosed(RequestID(2), into: &$1) }
        #expect(
            actions == ["cancelTarget(nil)", "giveBack(R2, discard)", "activity(idle)", "flushClient", "count(0, 1)"]
        )
        let messages = harness.clientMessages()
        #expect(messages.first.flatMap(Self.sqlState) == PGSQLState.connectionFailure)
        #expect(messages.last == .readyForQuery(.idle))
        #expect(!harness.session.isClosed)
    }

    @Test func aPoolTimeoutIs53300AndDropsTheRequestUpToItsSync() {
        var harness = SessionHarness()
        harness.start(mode: .transaction)
        _ = harness.clientMessages()
        _ = harness.frames([.parse(PGParse(statementName: "", query: "SELECT 1")), .sync])
        _ = harness.requested(token: 1, request: 1)
        let timeout = PoolError(code: .timeout, message: "pool_timeout")
        #expect(
            harness.send { $0.leaseFailed(token: 1, timeout, into: &$1) } == ["activity(idle)", "flushClient"]
        )
        let messages = harness.clientMessages()
        #expect(messages.first.flatMap(Self.sqlState) == PGSQLState.tooManyConnections)
        #expect(messages.last == .readyForQuery(.idle))
    }

    @Test(arguments: [PoolMode.session, .transaction, .statement])
    func aLoginTheServerRefusesIsFatalWithTheServersWords(mode: PoolMode) {
        var harness = SessionHarness()
        // Not cached: the login borrows a server connection in every mode.
        harness.start(mode: mode, cached: false)
        _ = harness.requested(token: 1, request: 1)
        let refusal = ConnectError(
            reason: .rejected,
            message: "database \"nosuch\" does not exist",
            sqlState: "3D000",
            isPermanent: true
        )
        let error = PoolError(code: .refused, message: refusal.message, connectError: refusal)
        let actions = harness.send { $0.leaseFailed(token: 1, error, into: &$1) }
        #expect(actions.last == "close")
        // After AuthenticationOk, as PostgreSQL says it: the database is looked up once the role is authenticated.
        #expect(
            harness.clientMessages().dropFirst() == [
                .errorResponse(
                    .error(sqlState: "3D000", message: "database \"nosuch\" does not exist", severity: .fatal)
                )
            ]
        )
    }

    @Test func aRefusalAfterLoginInTransactionModeIsAnErrorAndTheClientStays() {
        var harness = SessionHarness()
        harness.start(mode: .transaction)
        _ = harness.clientMessages()
        _ = harness.frames([.query("select 1")])
        _ = harness.requested(token: 1, request: 1)
        let refusal = ConnectError(reason: .auth, message: "role \"gone\" does not exist", sqlState: "28000")
        _ = harness.send {
            $0.leaseFailed(
                token: 1,
                PoolError(code: .refused, message: refusal.message, connectError: refusal),
                into: &$1
            )
        }
        #expect(
            harness.clientMessages() == [
                .errorResponse(.error(sqlState: "28000", message: "role \"gone\" does not exist")),
                .readyForQuery(.idle),
            ]
        )
        #expect(!harness.session.isClosed)
    }

    /// The greeting's ParameterStatus values for `names`.
    static func reported(_ messages: [PGBackendMessage], _ name: String) -> String? {
        for case .parameterStatus(name, let value) in messages { return value }
        return nil
    }

    @Test(arguments: [PoolMode.transaction, .statement])
    func aValueTheServerSpellsOtherwiseIsGreetedInTheServersSpelling(mode: PoolMode) {
        var harness = SessionHarness()
        let startup = PGStartupMessage(user: "app", database: "app", options: [("client_encoding", "utf8")])
        _ = harness.send { $0.startupReceived(startup, into: &$1) }
        // Cached parameters, but not how the server spells "utf8": a server connection is borrowed for the greeting.
        let login = harness.login(mode: mode)
        let admitted = harness.send { $0.admissionDecided(.admitted(login), into: &$1) }
        #expect(admitted.contains("requestLease(1)"), "\(admitted)")
        _ = harness.requested(token: 1, request: 1)
        let changes = [(name: "client_encoding", value: "utf8")]
        #expect(
            harness.grant(token: 1, request: 1, server: "a", changes: changes.map { ($0.name, $0.value) })
                == ["runCommand(R1, SET \"client_encoding\" TO 'utf8')"]
        )
        let finished = harness.send {
            $0.serverCommandFinished(
                .applyParameters(changes),
                .finished(error: nil, status: .idle, reported: [(name: "client_encoding", value: "UTF8")]),
                into: &$1
            )
        }
        #expect(finished.first == "giveBack(R1, release)")
        #expect(finished.contains("flushClient"))
        let greeting = harness.clientMessages()
        #expect(Self.reported(greeting, "client_encoding") == "UTF8")
        #expect(greeting.last == .readyForQuery(.idle))
        #expect(harness.session.parameters["client_encoding"] == "UTF8")
    }

    @Test func aKnownSpellingNeedsNoServerConnectionAtLogin() {
        var harness = SessionHarness()
        let startup = PGStartupMessage(
            user: "app",
            database: "app",
            options: [("client_encoding", "utf8"), ("application_name", "billing")]
        )
        _ = harness.send { $0.startupReceived(startup, into: &$1) }
        var login = harness.login(mode: .transaction)
        login.spellings.learn([(name: "client_encoding", value: "utf8")], [(name: "client_encoding", value: "UTF8")])
        let admitted = harness.send { $0.admissionDecided(.admitted(login), into: &$1) }
        #expect(!admitted.contains { $0.hasPrefix("requestLease") }, "\(admitted)")
        let greeting = harness.clientMessages()
        #expect(Self.reported(greeting, "client_encoding") == "UTF8")
        // A printable ASCII application_name is reported as given.
        #expect(harness.session.parameters["application_name"] == "billing")
    }

    @Test func aStaleStatementErrorDeallocatesTheConnectionsStatementsBeforeItGoesBack() {
        var harness = SessionHarness()
        harness.relaying("EXECUTE", mode: .transaction, request: 1)
        _ = harness.clientMessages()
        let stale = PGErrorFields.error(sqlState: "0A000", message: "cached plan must not change result type")
        let done = harness.server(1, [.errorResponse(stale), Frames.ready(.idle)])
        #expect(done.last == "runCommand(R1, DEALLOCATE ALL)", "\(done)")
        #expect(!done.contains { $0.hasPrefix("giveBack") })
        // The client hears the error as the server said it.
        #expect(harness.clientMessages().first.flatMap(Self.sqlState) == "0A000")
        let released = harness.send {
            $0.serverCommandFinished(.deallocate, .finished(error: nil, status: .idle, reported: []), into: &$1)
        }
        #expect(released.contains("giveBack(R1, release)"))
    }

    @Test func anOrdinaryErrorKeepsTheStatements() {
        var harness = SessionHarness()
        harness.relaying("SELECT 1/0", mode: .transaction, request: 1)
        let failed = PGErrorFields.error(sqlState: "22012", message: "division by zero")
        let done = harness.server(1, [.errorResponse(failed), Frames.ready(.idle)])
        #expect(done.contains("giveBack(R1, release)"), "\(done)")
    }

    @Test func statementModeRollsBackAndRefusesATransactionBlock() {
        var harness = SessionHarness()
        harness.relaying("BEGIN", mode: .statement, request: 1)
        _ = harness.clientMessages()
        #expect(
            harness.server(1, [.commandComplete(tag: "BEGIN"), Frames.ready(.inTransaction)])
                == ["flushClient", "runCommand(R1, ROLLBACK)"]
        )
        let done = harness.send {
            $0.serverCommandFinished(
                .refuseTransactionBlock,
                .finished(error: nil, status: .idle, reported: []),
                into: &$1
            )
        }
        #expect(done == ["flushClient", "cancelTarget(nil)", "activity(idle)", "giveBack(R1, release)", "count(0, 1)"])
        let messages = harness.clientMessages()
        #expect(messages.compactMap(Self.sqlState) == [PGSQLState.featureNotSupported])
        #expect(messages.last == .readyForQuery(.idle))
    }

    // MARK: Backpressure and drain

    @Test func aClientThatStopsReadingPausesItsServerUntilItReadsAgain() {
        var harness = SessionHarness()
        harness.relaying("SELECT repeat('x', 1000) FROM generate_series(1, 300000)", mode: .transaction, request: 1)
        #expect(harness.send { $0.clientWritabilityChanged(false, into: &$1) } == ["pauseServerReads(R1)"])
        #expect(harness.send { $0.clientWritabilityChanged(false, into: &$1) } == [])
        #expect(harness.send { $0.clientWritabilityChanged(true, into: &$1) } == ["resumeServerReads(R1)"])
        // Still full when the next server comes: it starts paused.
        _ = harness.server(1, Frames.result + [Frames.ready()])
        _ = harness.send { $0.clientWritabilityChanged(false, into: &$1) }
        _ = harness.frames([.query("SELECT 2")])
        _ = harness.requested(token: 2, request: 2)
        #expect(harness.grant(token: 2, request: 2, server: "b").contains("pauseServerReads(R2)"))
    }

    @Test func aFullServerOrTooMuchWaitingStopsReadingTheClient() {
        var harness = SessionHarness()
        harness.relaying("COPY t FROM STDIN", mode: .transaction, request: 1)
        #expect(harness.send { $0.serverWritabilityChanged(RequestID(1), false, into: &$1) } == ["pauseClientReads"])
        #expect(harness.send { $0.serverWritabilityChanged(RequestID(7), true, into: &$1) } == [], "another lease")
        #expect(harness.send { $0.serverWritabilityChanged(RequestID(1), true, into: &$1) } == ["resumeClientReads"])

        var waiting = SessionHarness()
        waiting.start(mode: .transaction)
        let big = String(repeating: "x", count: ClientSession.maxPendingBytes)
        #expect(waiting.frames([.query("SELECT '\(big)'")]).contains("pauseClientReads"))
        _ = waiting.requested(token: 1, request: 1)
        #expect(waiting.grant(token: 1, request: 1, server: "a").contains("resumeClientReads"))
    }

    @Test func drainClosesIdleClientsAtOnceAndBusyOnesWhenTheirTransactionEnds() {
        var idle = SessionHarness()
        idle.start(mode: .transaction)
        _ = idle.clientMessages()
        #expect(idle.send { $0.drain(into: &$1) } == ["close"])
        #expect(idle.clientMessages().first.flatMap(Self.sqlState) == PGSQLState.adminShutdown)

        var busy = SessionHarness()
        busy.relaying("SELECT 1", mode: .transaction, request: 1)
        #expect(busy.send { $0.drain(into: &$1) } == [])
        #expect(busy.server(1, Frames.result + [Frames.ready()]).suffix(2) == ["count(1, 1)", "close"])
    }

    static func sqlState(_ message: PGBackendMessage) -> String? {
        if case .errorResponse(let fields) = message { return fields.sqlState }
        return nil
    }
}

@Suite struct ReturnPlanTests {
    @Test func aConnectionThatOwesRepliesOrSaidFatalIsClosed() {
        var ledger = ServerLedger()
        ledger.sent(PGFrontendMessageType.query)
        #expect(ReturnPlan(ledger: ledger, mode: .transaction, resetQuery: nil, preparedStatements: 0) == .discard)
        ledger.readyForQuery(.idle)
        #expect(ReturnPlan(ledger: ledger, mode: .transaction, resetQuery: nil, preparedStatements: 0) == .release)
        ledger.sent(PGFrontendMessageType.parse)
        #expect(!ledger.isSettled, "an extended request without its Sync still owes replies")
        ledger.sent(PGFrontendMessageType.sync)
        ledger.readyForQuery(.idle)
        ledger.copyStarted()
        #expect(
            ReturnPlan(ledger: ledger, mode: .session, resetQuery: "DISCARD ALL", preparedStatements: 0) == .discard
        )
        var fatal = ServerLedger()
        fatal.fatalReceived()
        #expect(ReturnPlan(ledger: fatal, mode: .transaction, resetQuery: nil, preparedStatements: 0) == .discard)
    }

    @Test func cleanUpBeforeRelease() {
        var inTransaction = ServerLedger()
        inTransaction.sent(PGFrontendMessageType.query)
        inTransaction.readyForQuery(.inTransaction)
        #expect(
            ReturnPlan(ledger: inTransaction, mode: .session, resetQuery: "DISCARD ALL", preparedStatements: 0)
                == .reset(["ROLLBACK", "DISCARD ALL"])
        )
        #expect(
            ReturnPlan(ledger: ServerLedger(), mode: .session, resetQuery: "", preparedStatements: 0) == .release
        )
        let many = ReturnPlan.maxPreparedStatements + 1
        let plan = ReturnPlan(ledger: ServerLedger(), mode: .transaction, resetQuery: nil, preparedStatements: many)
        #expect(plan == .reset(["DEALLOCATE ALL"]))
        #expect(plan.clearsPreparedStatements)
        #expect(!ReturnPlan.reset(["ROLLBACK"]).clearsPreparedStatements)
    }
}
