//! The XML core: W3C conformance examples, every canonicalization rule,
//! hostile inputs, repair, the envelope, and the `c14n` command.

use agentserver::xml::{
    canonicalize, canonicalize_subtree, ingest, CanonicalXml, Envelope, Limits, Repair, XmlError,
};

fn c14n(input: &str) -> String {
    canonicalize(input.as_bytes(), &Limits::default(), &[])
        .unwrap_or_else(|e| panic!("{input:?}: {e}"))
        .into_string()
}

fn refused(input: &[u8]) -> XmlError {
    match ingest(input, &Limits::default()) {
        Err(error) => error,
        Ok(ingested) => panic!("accepted: {:?}", ingested.payloads),
    }
}

// --- W3C Canonical XML 1.0, section 3 (DOCTYPE lines removed: refused here) ---

#[test]
fn w3c_c14n_3_1_pis_comments_and_outside_of_document_element() {
    let input = "<?xml version=\"1.0\"?>\n\n<?xml-stylesheet   href=\"doc.xsl\"\n   type=\"text/xsl\"   ?>\n\n<doc>Hello, world!<!-- Comment 1 --></doc>\n\n<?pi-without-data     ?>\n\n<!-- Comment 2 -->\n\n<!-- Comment 3 -->\n";
    assert_eq!(
        c14n(input),
        "<?xml-stylesheet href=\"doc.xsl\"\n   type=\"text/xsl\"   ?>\n<doc>Hello, world!</doc>\n<?pi-without-data?>"
    );
}

#[test]
fn w3c_c14n_3_2_whitespace_in_document_content() {
    let input = "<doc>\n   <clean>   </clean>\n   <dirty>   A   B   </dirty>\n   <mixed>\n      A\n      <clean>   </clean>\n      B\n      <dirty>   A   B   </dirty>\n      C\n   </mixed>\n</doc>";
    assert_eq!(c14n(input), input);
}

#[test]
fn w3c_c14n_3_3_start_and_end_tags() {
    let input = r#"<doc>
   <e1   />
   <e2   ></e2>
   <e3   name = "elem3"   id="elem3"   />
   <e4   name="elem4"   id="elem4"   ></e4>
   <e5 a:attr="out" b:attr="sorted" attr2="all" attr="I'm"
      xmlns:b="http://www.ietf.org"
      xmlns:a="http://www.w3.org"
      xmlns="http://example.org"/>
   <e6 xmlns="" xmlns:a="http://www.w3.org">
      <e7 xmlns="http://www.ietf.org">
         <e8 xmlns="" xmlns:a="http://www.w3.org">
            <e9 xmlns="" xmlns:a="http://www.ietf.org"/>
         </e8>
      </e7>
   </e6>
</doc>"#;
    let expected = "<doc>\n   <e1></e1>\n   <e2></e2>\n   <e3 id=\"elem3\" name=\"elem3\"></e3>\n   <e4 id=\"elem4\" name=\"elem4\"></e4>\n   <e5 xmlns=\"http://example.org\" xmlns:a=\"http://www.w3.org\" xmlns:b=\"http://www.ietf.org\" attr=\"I'm\" attr2=\"all\" b:attr=\"sorted\" a:attr=\"out\"></e5>\n   <e6>\n      <e7 xmlns=\"http://www.ietf.org\">\n         <e8 xmlns=\"\">\n            <e9></e9>\n         </e8>\n      </e7>\n   </e6>\n</doc>";
    assert_eq!(c14n(input), expected);
}

#[test]
fn w3c_c14n_3_4_character_modifications_and_references() {
    let input = r#"<doc>
   <text>First line&#x0d;&#10;Second line</text>
   <value>&#x32;</value>
   <compute><![CDATA[value>"0" && value<"10" ?"valid":"error"]]></compute>
   <compute expr='value>"0" &amp;&amp; value&lt;"10" ?"valid":"error"'>valid</compute>
   <norm attr=' &apos;   &#x20;&#13;&#xa;&#9;   &apos; '/>
   <normNames attr='   A   &#x20;&#13;&#xa;&#9;   B   '/>
   <normId id=' &apos;   &#x20;&#13;&#xa;&#9;   &apos; '/>
</doc>"#;
    let expected = "<doc>\n   <text>First line&#xD;\nSecond line</text>\n   <value>2</value>\n   <compute>value&gt;\"0\" &amp;&amp; value&lt;\"10\" ?\"valid\":\"error\"</compute>\n   <compute expr=\"value>&quot;0&quot; &amp;&amp; value&lt;&quot;10&quot; ?&quot;valid&quot;:&quot;error&quot;\">valid</compute>\n   <norm attr=\" '    &#xD;&#xA;&#x9;   ' \"></norm>\n   <normNames attr=\"   A    &#xD;&#xA;&#x9;   B   \"></normNames>\n   <normId id=\" '    &#xD;&#xA;&#x9;   ' \"></normId>\n</doc>";
    assert_eq!(c14n(input), expected);
}

#[test]
fn w3c_c14n_3_8_utf8_output_of_references() {
    assert_eq!(
        c14n("<doc>&#169;&#xE9;\u{e9}&#x10000;</doc>"),
        "<doc>\u{a9}\u{e9}\u{e9}\u{10000}</doc>"
    );
}

// --- W3C Exclusive XML Canonicalization 1.0, section 2.2 ---

#[test]
fn w3c_exc_c14n_2_2_subtree_leaves_out_unused_ancestor_namespaces() {
    let limits = Limits::default();
    for input in [
        "<n0:local xmlns:n0=\"foo:bar\" xmlns:n3=\"ftp://example.org\">\n  <n1:elem2 xmlns:n1=\"http://example.net\" xml:lang=\"en\">\n     <n3:stuff xmlns:n3=\"ftp://example.org\"/>\n  </n1:elem2>\n</n0:local>",
        "<n2:pdu xmlns:n1=\"http://example.com\" xmlns:n2=\"http://foo.example\" xml:lang=\"fr\" xml:space=\"retain\">\n  <n1:elem2 xmlns:n1=\"http://example.net\" xml:lang=\"en\">\n     <n3:stuff xmlns:n3=\"ftp://example.org\"/>\n  </n1:elem2>\n</n2:pdu>",
    ] {
        let subtree = canonicalize_subtree(input.as_bytes(), &limits, &[], |depth, tag| {
            depth == 1 && tag.local_name() == "elem2"
        })
        .unwrap();
        assert_eq!(
            subtree.as_str(),
            "<n1:elem2 xmlns:n1=\"http://example.net\" xml:lang=\"en\">\n     <n3:stuff xmlns:n3=\"ftp://example.org\"></n3:stuff>\n  </n1:elem2>"
        );
        assert_eq!(subtree.tag().as_str(), "{http://example.net}elem2");
    }
}

#[test]
fn subtree_carries_in_the_namespaces_it_uses_from_ancestors() {
    let input = "<signed xmlns=\"urn:d\" xmlns:p=\"urn:p\" xmlns:unused=\"urn:u\"><payload id=\"1\"><p:x/><y/></payload></signed>";
    let payload = canonicalize_subtree(input.as_bytes(), &Limits::default(), &[], |depth, tag| {
        depth == 1 && tag.local_name() == "payload"
    })
    .unwrap();
    assert_eq!(
        payload.as_str(),
        "<payload xmlns=\"urn:d\" id=\"1\"><p:x xmlns:p=\"urn:p\"></p:x><y></y></payload>"
    );
}

#[test]
fn inclusive_prefix_list_renders_those_namespaces_at_the_apex() {
    let input =
        "<r xmlns:p=\"urn:p\" xmlns:q=\"urn:q\" xmlns=\"urn:d\"><p:a q:b=\"1\"><c/></p:a></r>";
    let limits = Limits::default();
    let select = |depth: usize, _: &agentserver::xml::Tag| depth == 1;
    let plain = canonicalize_subtree(input.as_bytes(), &limits, &[], select).unwrap();
    assert_eq!(
        plain.as_str(),
        "<p:a xmlns:p=\"urn:p\" xmlns:q=\"urn:q\" q:b=\"1\"><c xmlns=\"urn:d\"></c></p:a>"
    );
    // As the recommendation says (libxml2 leaves `#default` out here).
    let listed = canonicalize_subtree(input.as_bytes(), &limits, &["#default"], select).unwrap();
    assert_eq!(
        listed.as_str(),
        "<p:a xmlns=\"urn:d\" xmlns:p=\"urn:p\" xmlns:q=\"urn:q\" q:b=\"1\"><c></c></p:a>"
    );
    let whole = canonicalize(b"<r xmlns:p=\"urn:p\"><x/></r>", &limits, &["p"]).unwrap();
    assert_eq!(whole.as_str(), "<r xmlns:p=\"urn:p\"><x></x></r>");
}

// --- Our own cases, one per rule ---

#[test]
fn namespace_declarations_appear_only_where_visibly_used() {
    assert_eq!(
        c14n("<a xmlns:p=\"urn:p\" xmlns:u=\"urn:unused\"><b><p:c/></b><p:d/></a>"),
        "<a><b><p:c xmlns:p=\"urn:p\"></p:c></b><p:d xmlns:p=\"urn:p\"></p:d></a>"
    );
    // Already in force in the output: not repeated.
    assert_eq!(
        c14n("<p:a xmlns:p=\"urn:p\"><p:b xmlns:p=\"urn:p\"/></p:a>"),
        "<p:a xmlns:p=\"urn:p\"><p:b></p:b></p:a>"
    );
    // Attribute prefixes count as use; the xml prefix is never declared.
    assert_eq!(
        c14n("<a xmlns:p=\"urn:p\" xml:lang=\"en\" p:x=\"1\"/>"),
        "<a xmlns:p=\"urn:p\" xml:lang=\"en\" p:x=\"1\"></a>"
    );
}

#[test]
fn default_namespace_and_its_undeclaration() {
    assert_eq!(
        c14n("<a xmlns=\"urn:d\"><b xmlns=\"\"><c/></b><d xmlns=\"urn:d\"/></a>"),
        "<a xmlns=\"urn:d\"><b xmlns=\"\"><c></c></b><d></d></a>"
    );
    // xmlns="" where no default is in force is superfluous.
    assert_eq!(c14n("<a xmlns=\"\"><b/></a>"), "<a><b></b></a>");
}

#[test]
fn attributes_sort_by_namespace_uri_then_local_name() {
    assert_eq!(
        c14n("<a xmlns:z=\"urn:a\" xmlns:y=\"urn:b\" y:k=\"1\" z:k=\"2\" b=\"3\" a=\"4\"/>"),
        "<a xmlns:y=\"urn:b\" xmlns:z=\"urn:a\" a=\"4\" b=\"3\" z:k=\"2\" y:k=\"1\"></a>"
    );
}

#[test]
fn text_and_attribute_escaping() {
    assert_eq!(
        c14n("<a v=\"&lt;&amp;&gt;&quot;'\t\n\r\">&lt;&amp;&gt;\"'&#xD;</a>"),
        "<a v=\"&lt;&amp;>&quot;'   \">&lt;&amp;&gt;\"'&#xD;</a>"
    );
    assert_eq!(c14n("<a>x\r\ny\rz</a>"), "<a>x\ny\nz</a>");
}

#[test]
fn duplicate_attributes_and_unbound_prefixes_are_refused() {
    let limits = Limits::default();
    let err = canonicalize(
        b"<a xmlns:p=\"urn:x\" xmlns:q=\"urn:x\" p:a=\"1\" q:a=\"2\"/>",
        &limits,
        &[],
    );
    assert!(matches!(err, Err(XmlError::Malformed(_))), "{err:?}");
    let err = canonicalize(b"<p:a/>", &limits, &[]);
    assert_eq!(err, Err(XmlError::UnboundPrefix("p".into())));
    let err = canonicalize(b"<a xmlns:p=\"\"/>", &limits, &[]);
    assert!(matches!(err, Err(XmlError::Malformed(_))), "{err:?}");
}

#[test]
fn ampersand_in_a_namespace_uri_is_escaped() {
    // libxml2 writes this `&` unescaped, which is not even well-formed.
    assert_eq!(
        c14n("<a xmlns=\"urn:x?a=1&amp;b=2\"/>"),
        "<a xmlns=\"urn:x?a=1&amp;b=2\"></a>"
    );
}

#[test]
fn canonical_form_carries_its_root_tag_in_clark_notation() {
    let limits = Limits::default();
    let plain = canonicalize(b"<calculate>1</calculate>", &limits, &[]).unwrap();
    assert_eq!(plain.tag().as_str(), "calculate");
    let spaced = canonicalize(b"<c:calc xmlns:c=\"urn:c\"/>", &limits, &[]).unwrap();
    assert_eq!(spaced.tag().as_str(), "{urn:c}calc");
    let default = canonicalize(b"<calc xmlns=\"urn:d\"/>", &limits, &[]).unwrap();
    assert_eq!(default.tag().as_str(), "{urn:d}calc");
}

// --- Hostile input ---

#[test]
fn billion_laughs_is_refused_as_a_doctype_with_entities() {
    let mut input =
        String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
    for i in 1..10 {
        let prev = if i == 1 {
            "lol".to_owned()
        } else {
            format!("lol{}", i - 1)
        };
        input.push_str(&format!(
            "<!ENTITY lol{i} \"{}\">\n",
            format!("&{prev};").repeat(10)
        ));
    }
    input.push_str("]>\n<lolz>&lol9;</lolz>");
    assert_eq!(refused(input.as_bytes()), XmlError::EntityDeclaration);
}

#[test]
fn external_entity_is_refused() {
    let input = "<!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><foo>&xxe;</foo>";
    assert_eq!(refused(input.as_bytes()), XmlError::EntityDeclaration);
    assert_eq!(
        refused(b"<!DOCTYPE foo SYSTEM \"http://example.org/evil.dtd\"><foo/>"),
        XmlError::Doctype
    );
    assert_eq!(
        refused(b"<foo>&xxe;</foo>"),
        XmlError::UndeclaredEntity("xxe".into())
    );
}

#[test]
fn quadratic_blowup_is_refused() {
    let entity = "x".repeat(50_000);
    let input = format!(
        "<!DOCTYPE kaboom [<!ENTITY a \"{entity}\">]><kaboom>{}</kaboom>",
        "&a;".repeat(10_000)
    );
    assert_eq!(refused(input.as_bytes()), XmlError::EntityDeclaration);
}

#[test]
fn ten_thousand_deep_nesting_is_refused() {
    let input = "<a>".repeat(10_000) + &"</a>".repeat(10_000);
    assert_eq!(refused(input.as_bytes()), XmlError::TooDeep { limit: 64 });
    let unclosed = "<a>".repeat(10_000);
    assert_eq!(
        refused(unclosed.as_bytes()),
        XmlError::TooDeep { limit: 64 }
    );
}

#[test]
fn a_hundred_thousand_attributes_are_refused() {
    let attributes: String = (0..100_000).map(|i| format!(" a{i}=\"\"")).collect();
    let input = format!("<a{attributes}/>");
    assert!(input.len() < 1 << 20);
    assert_eq!(
        refused(input.as_bytes()),
        XmlError::TooManyAttributes { limit: 1_024 }
    );
}

#[test]
fn invalid_utf8_is_refused() {
    assert_eq!(refused(b"<a>\xff\xfe</a>"), XmlError::InvalidUtf8);
    assert_eq!(refused(b"<a>\xc3</a>"), XmlError::InvalidUtf8);
}

#[test]
fn a_twenty_megabyte_text_node_is_refused_before_parsing() {
    let input = format!("<a>{}</a>", "x".repeat(20 << 20));
    assert_eq!(
        refused(input.as_bytes()),
        XmlError::TooLarge {
            size: input.len(),
            limit: 1 << 20
        }
    );
}

#[test]
fn processing_instructions_and_control_characters_are_refused_on_the_bus() {
    assert_eq!(
        refused(b"<a><?php system('x'); ?></a>"),
        XmlError::ProcessingInstruction
    );
    assert_eq!(refused(b"<?evil?><a/>"), XmlError::ProcessingInstruction);
    assert!(matches!(refused(b"<a>\x01</a>"), XmlError::Malformed(_)));
    assert!(matches!(refused(b"<a>&#0;</a>"), XmlError::Malformed(_)));
}

// --- Repair ---

fn repaired(input: &str) -> (Vec<String>, Vec<Repair>) {
    let ingested =
        ingest(input.as_bytes(), &Limits::default()).unwrap_or_else(|e| panic!("{input:?}: {e}"));
    let payloads: Vec<String> = ingested
        .payloads
        .iter()
        .map(|p| {
            // Repaired output is canonical: canonicalizing again changes nothing.
            assert_eq!(c14n(p.as_str()), p.as_str());
            p.as_str().to_owned()
        })
        .collect();
    (payloads, ingested.repairs)
}

#[test]
fn junk_around_the_root_is_removed() {
    let (payloads, repairs) =
        repaired("Sure! Here it is:\n<calculate>1+1</calculate>\nHope this helps.");
    assert_eq!(payloads, ["<calculate>1+1</calculate>"]);
    assert_eq!(repairs, [Repair::JunkBeforeRoot, Repair::JunkAfterRoot]);
}

#[test]
fn bare_ampersands_and_less_thans_are_escaped() {
    let (payloads, repairs) = repaired("<q>fish & chips & 1 < 2 &amp; ok</q>");
    assert_eq!(
        payloads,
        ["<q>fish &amp; chips &amp; 1 &lt; 2 &amp; ok</q>"]
    );
    assert_eq!(repairs, [Repair::BareLessThan(1), Repair::BareAmpersand(2)]);
    assert_eq!(repairs[1].to_string(), "escaped 2 bare &");
}

#[test]
fn unquoted_attribute_values_are_quoted() {
    let (payloads, repairs) = repaired("<a b=1 c=two/>");
    assert_eq!(payloads, ["<a b=\"1\" c=\"two\"></a>"]);
    assert_eq!(
        repairs,
        [
            Repair::UnquotedAttribute("b".into()),
            Repair::UnquotedAttribute("c".into())
        ]
    );
}

#[test]
fn unclosed_elements_at_the_end_are_closed() {
    let (payloads, repairs) = repaired("<a><b>text");
    assert_eq!(payloads, ["<a><b>text</b></a>"]);
    assert_eq!(
        repairs,
        [
            Repair::UnclosedElement("b".into()),
            Repair::UnclosedElement("a".into())
        ]
    );
}

#[test]
fn mismatched_end_tags_are_repaired() {
    let (payloads, repairs) = repaired("<a><b>x</a>");
    assert_eq!(payloads, ["<a><b>x</b></a>"]);
    assert_eq!(
        repairs,
        [Repair::MismatchedEndTag {
            closed: "b".into(),
            found: "a".into()
        }]
    );
    let (payloads, repairs) = repaired("<a>x</c></a>");
    assert_eq!(payloads, ["<a>x</a>"]);
    assert_eq!(repairs, [Repair::StrayEndTag("c".into())]);
}

#[test]
fn several_top_level_elements_are_several_payloads() {
    let (payloads, repairs) = repaired("<a/>\n<b x='1'/>");
    assert_eq!(payloads, ["<a></a>", "<b x=\"1\"></b>"]);
    assert!(repairs.is_empty());
}

#[test]
fn what_cannot_be_repaired_safely_is_refused() {
    assert!(matches!(
        refused(b"<a b=\"unterminated></a>"),
        XmlError::Malformed(_)
    ));
    assert!(matches!(
        refused(b"<a disabled></a>"),
        XmlError::Malformed(_)
    ));
    assert!(matches!(
        refused(b"<a><!-- never closed</a>"),
        XmlError::Malformed(_)
    ));
    assert!(matches!(refused(b"just text"), XmlError::Malformed(_)));
    assert_eq!(
        refused(b"<a>&nbsp;</a>"),
        XmlError::UndeclaredEntity("nbsp".into())
    );
}

// --- Envelope ---

fn canonical(input: &str) -> CanonicalXml {
    canonicalize(input.as_bytes(), &Limits::default(), &[]).unwrap()
}

#[test]
fn envelope_round_trips_and_escapes_every_field() {
    let envelope = Envelope {
        from: Some("calc".into()),
        to: Some("user:<alice>".into()),
        thread: Some("t&1".into()),
        huh: vec!["escaped a bare &".into()],
        payload: canonical("<result>14</result>"),
    };
    let xml = envelope.to_xml();
    assert_eq!(
        xml.as_str(),
        "<message><meta><from>calc</from><to>user:&lt;alice&gt;</to><thread>t&amp;1</thread><huh>escaped a bare &amp;</huh></meta><result>14</result></message>"
    );
    assert_eq!(
        c14n(xml.as_str()),
        xml.as_str(),
        "built envelopes are canonical"
    );
    assert_eq!(Envelope::parse(&xml).unwrap(), envelope);
}

#[test]
fn envelope_payload_takes_the_namespaces_it_needs_from_the_message() {
    let message = canonical(
        "<message xmlns:c=\"urn:c\"><meta><thread>T</thread></meta><c:calc>1</c:calc></message>",
    );
    let envelope = Envelope::parse(&message).unwrap();
    assert_eq!(envelope.thread.as_deref(), Some("T"));
    assert_eq!(
        envelope.payload.as_str(),
        "<c:calc xmlns:c=\"urn:c\">1</c:calc>"
    );
    assert_eq!(envelope.payload.tag().as_str(), "{urn:c}calc");
}

#[test]
fn envelope_with_two_payloads_is_refused() {
    let message = canonical("<message><meta/><a/><b/></message>");
    assert!(matches!(
        Envelope::parse(&message),
        Err(XmlError::Malformed(_))
    ));
}

// --- The c14n command ---

#[test]
fn c14n_command_prints_exact_bytes_and_fails_with_one_line() {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let binary = env!("CARGO_BIN_EXE_agentserver");
    let mut child = Command::new(binary)
        .args(["c14n", "-", "--prefixes", "p"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"<?xml version=\"1.0\"?>\n<r xmlns:p=\"urn:p\"  b='2' a=\"1\"/>\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    assert_eq!(output.stdout, b"<r xmlns:p=\"urn:p\" a=\"1\" b=\"2\"></r>");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.xml");
    std::fs::write(&bad, "<!DOCTYPE x><x/>").unwrap();
    let output = Command::new(binary).arg("c14n").arg(&bad).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr,
        "agentserver: DOCTYPE declarations are not allowed\n"
    );
    assert!(output.stdout.is_empty());
}
