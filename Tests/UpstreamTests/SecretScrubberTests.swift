import Testing

@testable import Upstream

@Suite struct SecretScrubberTests {
    @Test func findsURIAndKeywordPasswords() {
        #expect(SecretScrubber.secrets(in: "postgresql://u:pw%21@h/db") == ["pw%21", "pw!"])
        #expect(SecretScrubber.secrets(in: "host=h password=abc user=u") == ["abc"])
        #expect(SecretScrubber.secrets(in: "password='a b\\'c' user=u") == ["a b'c"])
        #expect(SecretScrubber.secrets(in: "password=one two three user=u") == ["one", "two", "three"])
        #expect(SecretScrubber.secrets(in: "postgresql://u@h/db?password=x1&sslmode=require") == ["x1"])
        #expect(SecretScrubber.secrets(in: "host=h user=u").isEmpty)
    }

    @Test func masksURIPasswordsAnywhere() {
        let text = "could not use \"postgres://app:hunter2@db:5432/x\" and postgresql://b:c@d"
        #expect(
            SecretScrubber.maskingURIPasswords(in: text)
                == "could not use \"postgres://app:********@db:5432/x\" and postgresql://b:********@d"
        )
        #expect(SecretScrubber.maskingURIPasswords(in: "postgresql://app@db/x") == "postgresql://app@db/x")
    }

    @Test func shortSecretsAreMaskedOnlyInsideQuotes() {
        let scrubbed = SecretScrubber.scrub("missing \"=\" after \"ab\" near ab", secrets: ["ab"])
        #expect(scrubbed == "missing \"=\" after \"********\" near ab")
        #expect(SecretScrubber.scrub("token hunter2 here", secrets: ["hunter2"]) == "token ******** here")
    }
}
