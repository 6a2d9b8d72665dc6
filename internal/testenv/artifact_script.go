package testenv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// ArtifactRateSlow is the per-response body rate of SLOWART: a download of
// the big blob on 4 connections takes seconds, long enough to be killed
// in the middle.
const ArtifactRateSlow = 2_000_000

// ArtifactRegistries are the artifact fixtures pushed with oras-go to the
// anonymous registry, and fault proxies in front of it. Vars are what the
// scripts see:
//
//	ARTIFACT       the files artifact (big.bin, bin/tool, notes.txt,
//	               bundle.tar.gz, docs/fmt.go, docs/errors.go)
//	ARTIFACT_REPO  its repository, for REPO@sha256:... references
//	ARTIFACT_<T>   digest and size (_SIZE) of each file, T = BIG, TOOL,
//	               NOTES, BUNDLE
//	HOSTILEART     the hostile-titles artifact
//	CONFIGART      notes.txt and bin/tool as an image-spec v1.0 artifact
//	               (custom config media type, no artifactType field)
//	NORANGEART     ARTIFACT through a proxy that drops Range headers
//	RANGE416ART    ARTIFACT through a proxy answering 416 to ranged GETs
//	SLOWART        ARTIFACT through a proxy sending bodies at 2 MB/s
//	FLIPART        ARTIFACT through a proxy flipping byte 1000 of the
//	               first ranged blob GET's body
//	RESETART       ARTIFACT through a proxy cutting the first 3 blob
//	               bodies after 1 MB
//
// Proxies maps each proxy's variable name to it, for byte counts.
type ArtifactRegistries struct {
	Vars    []string
	Proxies map[string]*FaultProxy

	closers []func() error
}

// StartArtifactRegistries pushes a's artifacts to the registry at anon and
// starts the proxies. The caller must call Close.
func StartArtifactRegistries(ctx context.Context, a *Artifacts, anon string) (_ *ArtifactRegistries, err error) {
	s := &ArtifactRegistries{Proxies: map[string]*FaultProxy{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// The same small files as an image-spec v1.0 artifact: no
	// artifactType, a custom config media type.
	configTyped := &Artifact{Name: "artifacts/configtyped", Tag: "v1", ArtifactType: "application/vnd.stargz-get.test.config.v1+json", ImageSpec10: true}
	for _, f := range a.Files.Files {
		if f.Title == NotesTitle || f.Title == ToolTitle {
			configTyped.Files = append(configTyped.Files, f)
		}
	}
	for _, art := range []*Artifact{a.Files, a.Hostile, configTyped} {
		if err := art.Push(ctx, anon); err != nil {
			return nil, err
		}
	}
	add := func(k, v string) { s.Vars = append(s.Vars, k+"="+v) }
	add("ARTIFACT", a.Files.Ref(anon))
	add("ARTIFACT_REPO", anon+"/"+a.Files.Name)
	add("ARTIFACT_MANIFEST", a.Files.Digest)
	add("HOSTILEART", a.Hostile.Ref(anon))
	add("CONFIGART", configTyped.Ref(anon))
	for k, title := range map[string]string{"BIG": BigTitle, "TOOL": ToolTitle, "NOTES": NotesTitle, "BUNDLE": BundleTitle} {
		f := a.Files.File(title)
		add("ARTIFACT_"+k, f.Digest)
		add("ARTIFACT_"+k+"_SIZE", fmt.Sprint(f.Size))
	}
	proxy := func(name string, rules ...Rule) error {
		p, err := StartFaultProxy(anon)
		if err != nil {
			return err
		}
		s.closers = append(s.closers, p.Close)
		p.Add(rules...)
		s.Proxies[name] = p
		add(name, a.Files.Ref(p.Host))
		return nil
	}
	ranged := MatchAll(MatchBlobs, MatchRanged)
	errs := []error{
		proxy("NORANGEART", Rule{Match: MatchBlobs, Fault: Fault{IgnoreRange: true}}),
		proxy("RANGE416ART", Rule{Match: ranged, Fault: Fault{Status: http.StatusRequestedRangeNotSatisfiable}}),
		proxy("SLOWART", Rule{Match: MatchBlobs, Fault: Fault{Rate: ArtifactRateSlow}}),
		proxy("FLIPART", Rule{Match: ranged, Times: 1, Fault: Fault{Flip: 1000}}),
		proxy("RESETART", Rule{Match: MatchAll(MatchBlobs, bigRange), Times: 3, Fault: Fault{CutAfter: 1 << 20}}),
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops the proxies.
func (s *ArtifactRegistries) Close() error {
	var errs []error
	for _, c := range s.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}
