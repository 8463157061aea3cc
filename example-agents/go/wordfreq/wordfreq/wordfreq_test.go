package wordfreq

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseReadsTopAndText(t *testing.T) {
	request, err := Parse(`<wordfreq top="3">a &amp; b</wordfreq>`, "wordfreq")
	if err != nil {
		t.Fatal(err)
	}
	want := Request{Tag: "wordfreq", Top: 3, Text: "a & b"}
	if request != want {
		t.Fatalf("got %+v, want %+v", request, want)
	}
	request, err = Parse(`<wordfreq-total></wordfreq-total>`, "wordfreq-total")
	if err != nil || request.Top != DefaultTop || request.Text != "" {
		t.Fatalf("got %+v, %v", request, err)
	}
}

func TestParseRefusesWhatItDoesNotUnderstand(t *testing.T) {
	for _, c := range []struct{ payload, want string }{
		{`<wordfreq>a <b>bold</b> move</wordfreq>`, "<wordfreq> takes text only, but holds the child element <b>: escape markup as &lt;"},
		{`<words>a</words>`, "expected a <wordfreq> element, got <words>"},
		{`<wordfreq xmlns="urn:x">a</wordfreq>`, "expected a <wordfreq> element, got <wordfreq>"},
		{`<wordfreq top="0">a</wordfreq>`, `top="0" is not a whole number from 1 to 1000`},
		{`<wordfreq top="many">a</wordfreq>`, `top="many" is not a whole number from 1 to 1000`},
		{`<wordfreq lang="en">a</wordfreq>`, `<wordfreq> has no attribute "lang" (only top)`},
		{`<wordfreq>a`, "not well-formed XML: XML syntax error on line 1: unexpected EOF"},
	} {
		_, err := Parse(c.payload, "wordfreq")
		if err == nil || err.Error() != c.want {
			t.Errorf("%s: got %v, want %q", c.payload, err, c.want)
		}
	}
}

func TestWordsLowerCasesAndKeepsInnerApostrophes(t *testing.T) {
	got := Words("Don't panic! 'Quoted' words, ÉTÉ 2026 -- x")
	want := []string{"don't", "panic", "quoted", "words", "été", "2026", "x"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if len(Words(" \n\t.,;")) != 0 {
		t.Fatal("punctuation alone has no words")
	}
}

func TestTopRanksByCountThenAlphabetically(t *testing.T) {
	tally := NewTally()
	tally.Add("the cat and the hat and the bat")
	got := tally.Top(3)
	want := []WordCount{{"the", 3}, {"and", 2}, {"bat", 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if len(tally.Top(100)) != 5 {
		t.Fatal("top past the distinct words lists them all")
	}
}

func TestRenderWritesTotalsAndRankedWords(t *testing.T) {
	tally := NewTally()
	tally.Add("b a b")
	got := tally.Render(10, false)
	want := `<word-counts distinct="2" words="3"><word count="2">b</word><word count="1">a</word></word-counts>`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	session := NewTally()
	session.Merge(tally)
	other := NewTally()
	other.Add("c")
	session.Merge(other)
	got = session.Render(1, true)
	want = `<word-counts distinct="3" texts="2" words="4"><word count="2">b</word></word-counts>`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	empty := NewTally().Render(5, true)
	if !strings.HasPrefix(empty, `<word-counts distinct="0" texts="0" words="0">`) {
		t.Fatal(empty)
	}
}

func TestRenderEscapesAsCanonicalXML(t *testing.T) {
	tally := NewTally()
	tally.counts["a<b&c>"] = 1
	got := tally.Render(1, false)
	want := `<word-counts distinct="1" words="0"><word count="1">a&lt;b&amp;c&gt;</word></word-counts>`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if Words("don't")[0] != "don't" {
		t.Fatal("an apostrophe is kept as it is")
	}
}
