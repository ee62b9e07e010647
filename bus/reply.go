package bus

import (
	"fmt"
	"strings"
)

// DefaultReplyPrefixes are the reply subjects the worker answers by default:
// nats.go's inboxes (_INBOX.), the per-user inbox prefixes (_INBOX_<user>.)
// that deploy/nats-server.conf hands out, and the reply subjects the server
// makes for requests that cross accounts through a service import (_R_.).
var DefaultReplyPrefixes = []string{"_INBOX.", "_INBOX_", "_R_."}

// replyFilter decides which reply subjects the worker publishes on. A reply
// subject is the requester's word: answering one outside an inbox would
// publish with the worker's permissions wherever the requester pointed it:
// on another instance's state subject, a quiesce subject, or the registry's
// own $KV subjects.
type replyFilter struct {
	prefixes []string
	own      string // "P.": never answered, whatever the prefixes say
	inbox    string // the worker's own inboxes, when private: never answered
}

// newReplyFilter checks prefixes (nil: DefaultReplyPrefixes) against the
// subject prefix. Errors wrap ErrBadKey.
func newReplyFilter(prefixes []string, subj Subjects) (replyFilter, error) {
	if prefixes == nil {
		prefixes = DefaultReplyPrefixes
	}
	if len(prefixes) == 0 {
		return replyFilter{}, fmt.Errorf("%w: no reply prefix: the worker could answer no request", ErrBadKey)
	}
	f := replyFilter{prefixes: prefixes, own: subj.Prefix() + "."}
	for _, p := range prefixes {
		switch {
		case p == "" || strings.ContainsAny(p, " \t\r\n*>"):
			return replyFilter{}, fmt.Errorf("%w: reply prefix %q must be non-empty, without white space or wildcards", ErrBadKey, p)
		case p[0] == '$':
			return replyFilter{}, fmt.Errorf("%w: reply prefix %q: $-subjects belong to the server (JetStream, KV, system)", ErrBadKey, p)
		case strings.HasPrefix(f.own, p) || strings.HasPrefix(p, f.own):
			return replyFilter{}, fmt.Errorf("%w: reply prefix %q overlaps the worker's own subjects %s>", ErrBadKey, p, f.own)
		}
	}
	return f, nil
}

// CheckReplyPrefixes reports whether prefixes may be WorkerConfig's
// ReplyPrefixes under subjects: non-empty literals that are not $-subjects
// and do not overlap the worker's own prefix. Errors wrap ErrBadKey.
func CheckReplyPrefixes(prefixes []string, subjects Subjects) error {
	_, err := newReplyFilter(prefixes, subjects)
	return err
}

// allow reports whether the worker may publish a reply on subject.
func (f replyFilter) allow(subject string) bool {
	if subject == "" || subject[0] == '$' || strings.HasPrefix(subject, f.own) ||
		(f.inbox != "" && strings.HasPrefix(subject, f.inbox)) {
		return false
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(subject, p) {
			return !strings.ContainsAny(subject[len(p):], " \t\r\n*>")
		}
	}
	return false
}
