import Testing

@testable import LifeguardConfig

@Suite struct TOMLLineIndexTests {
    @Test func findsKeysAndTables() {
        let index = TOMLLineIndex(
            """
            # comment
            pool_size = 5
              "quoted" = "a = b"
            reset_query = \"\"\"
            not_a_key = 1
            \"\"\"
            max_overflow=2 # trailing comment with = sign

            [databases.app]
            dsn = "host=x"
            [databases."my.db"]
            pool_size = 3
            [databases . spaced]
            min_size = 1
            """
        )
        #expect(index.line(["pool_size"]) == 2)
        #expect(index.line(["quoted"]) == 3)
        #expect(index.line(["reset_query"]) == 4)
        #expect(index.line(["not_a_key"]) == nil)
        #expect(index.line(["max_overflow"]) == 7)
        #expect(index.line(["databases", "app"]) == 9)
        #expect(index.line(["databases", "app", "dsn"]) == 10)
        #expect(index.line(["databases", "my.db", "pool_size"]) == 12)
        #expect(index.line(["databases", "spaced", "min_size"]) == 14)
    }
}
