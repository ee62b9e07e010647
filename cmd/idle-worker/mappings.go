package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/idle-worker/idle-worker/bus"
	"github.com/idle-worker/idle-worker/partition"
)

// writeMappings writes to w the nats-server configuration block of subject
// mappings that partitions the configured prefix among IDLE_PARTITIONS
// (partition.Mappings). A prefix that no mapping can carry is a
// configError naming IDLE_SUBJECT_PREFIX.
func writeMappings(w io.Writer, c config) error {
	b, err := partition.Mappings(bus.MustSubjects(c.SubjectPrefix), c.Partitions)
	switch {
	case errors.Is(err, partition.ErrBadCount):
		return bad("PARTITIONS", "%v", err)
	case err != nil:
		return bad("SUBJECT_PREFIX", "%v", err)
	}
	if _, err := io.WriteString(w, b.Config()); err != nil {
		return fmt.Errorf("write the mappings: %w", err)
	}
	return nil
}
