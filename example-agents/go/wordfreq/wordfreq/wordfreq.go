// Package wordfreq counts the words of texts and ranks them, with the
// standard library only: encoding/xml reads the request, strings and
// unicode split the words, sort ranks them. It knows nothing of the agent
// contract, so its tests run natively (`go test ./wordfreq`).
package wordfreq

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// DefaultTop is how many words an answer lists when the request does not say.
const DefaultTop = 10

// MaxTop bounds the `top` attribute.
const MaxTop = 1000

// Request is one parsed `<wordfreq>` or `<wordfreq-total>` element.
type Request struct {
	// Tag is the element's name: "wordfreq" or "wordfreq-total".
	Tag string
	// Top is how many words to list, 1 to MaxTop.
	Top int
	// Text is the element's text, entities resolved.
	Text string
}

// Parse reads payload, one element named tag (no namespace), whose only
// attribute may be top="N" and whose content is text. The error says what is
// wrong in words a sender can act on.
func Parse(payload, tag string) (Request, error) {
	request := Request{Tag: tag, Top: DefaultTop}
	decoder := xml.NewDecoder(strings.NewReader(payload))
	depth := 0
	var text strings.Builder
	for {
		token, err := decoder.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Request{}, fmt.Errorf("not well-formed XML: %v", err)
		}
		switch t := token.(type) {
		case xml.StartElement:
			if depth > 0 {
				return Request{}, fmt.Errorf("<%s> takes text only, but holds the child element <%s>: escape markup as &lt;", tag, t.Name.Local)
			}
			if t.Name.Space != "" || t.Name.Local != tag {
				return Request{}, fmt.Errorf("expected a <%s> element, got <%s>", tag, t.Name.Local)
			}
			for _, attribute := range t.Attr {
				if attribute.Name.Space != "" || attribute.Name.Local != "top" {
					return Request{}, fmt.Errorf("<%s> has no attribute %q (only top)", tag, attribute.Name.Local)
				}
				top, err := strconv.Atoi(attribute.Value)
				if err != nil || top < 1 || top > MaxTop {
					return Request{}, fmt.Errorf("top=%q is not a whole number from 1 to %d", attribute.Value, MaxTop)
				}
				request.Top = top
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth > 0 {
				text.Write(t)
			}
		}
	}
	request.Text = text.String()
	return request, nil
}

// Words splits text into lower-case words: runs of letters and digits, with
// apostrophes inside a word kept ("don't").
func Words(text string) []string {
	fields := strings.FieldsFunc(text, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsNumber(r) && r != '\'' && r != '’'
	})
	words := make([]string, 0, len(fields))
	for _, field := range fields {
		word := strings.Trim(field, "'’")
		if word != "" {
			words = append(words, strings.ToLower(word))
		}
	}
	return words
}

// escapeText escapes character data as exclusive canonical XML does, so
// the answers are already in the form the host would put them in.
var escapeText = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", "\r", "&#xD;")

// Tally counts words over one or more texts.
type Tally struct {
	counts map[string]int
	words  int
	texts  int
}

// NewTally is an empty tally.
func NewTally() *Tally {
	return &Tally{counts: make(map[string]int)}
}

// Add counts the words of one text. A word counted for the first time is
// copied, so that the tally does not keep the whole text alive.
func (t *Tally) Add(text string) {
	for _, word := range Words(text) {
		if _, seen := t.counts[word]; !seen {
			word = strings.Clone(word)
		}
		t.counts[word]++
		t.words++
	}
	t.texts++
}

// Merge adds every count of other to t.
func (t *Tally) Merge(other *Tally) {
	for word, count := range other.counts {
		t.counts[word] += count
	}
	t.words += other.words
	t.texts += other.texts
}

// WordCount is one word and how often it occurs.
type WordCount struct {
	Word  string
	Count int
}

// Top lists the n most frequent words, most frequent first, ties in
// alphabetical order.
func (t *Tally) Top(n int) []WordCount {
	ranked := make([]WordCount, 0, len(t.counts))
	for word, count := range t.counts {
		ranked = append(ranked, WordCount{word, count})
	}
	sort.Slice(ranked, func(i, j int) bool {
		if ranked[i].Count != ranked[j].Count {
			return ranked[i].Count > ranked[j].Count
		}
		return ranked[i].Word < ranked[j].Word
	})
	if len(ranked) > n {
		ranked = ranked[:n]
	}
	return ranked
}

// Render writes the answer: <word-counts> with the totals as attributes
// (texts only when counting several) and one <word> per ranked word.
func (t *Tally) Render(top int, withTexts bool) string {
	var out strings.Builder
	// Attributes in canonical (sorted) order, as the host would put them.
	fmt.Fprintf(&out, `<word-counts distinct="%d"`, len(t.counts))
	if withTexts {
		fmt.Fprintf(&out, ` texts="%d"`, t.texts)
	}
	fmt.Fprintf(&out, ` words="%d">`, t.words)
	for _, ranked := range t.Top(top) {
		fmt.Fprintf(&out, `<word count="%d">`, ranked.Count)
		// Words hold letters, digits and apostrophes; escaped all the same.
		escapeText.WriteString(&out, ranked.Word)
		out.WriteString("</word>")
	}
	out.WriteString("</word-counts>")
	return out.String()
}
