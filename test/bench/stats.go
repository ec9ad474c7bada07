package main

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"time"
)

// notMeasured is a cell for which the run has no measurement.
const notMeasured = "n/a"

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[max(0, min(i, len(s)-1))]
}

// sumQuantile is the q-quantile of a+b over every pair of a sample of as and
// one of bs: the time of two steps taken one after the other, had each taken
// as long as some sample of its own. It treats the steps as independent, so a
// slow moment that holds up both at once is in neither: an optimistic bound.
func sumQuantile(as, bs []time.Duration, q float64) time.Duration {
	sums := make([]time.Duration, 0, len(as)*len(bs))
	for _, a := range as {
		for _, b := range bs {
			sums = append(sums, a+b)
		}
	}
	return quantile(sums, q)
}

// ratioInterval is a 95% bootstrap percentile interval for the ratio of the
// p99s of num and den (the quantile the targets are set on): the ratio over
// 2,000 resamples, each drawing as many samples as each side has, with
// replacement. A p99 of 200 samples is their second largest, so one slow
// sample more or less moves it, and this says how far. The generator is
// seeded: the same samples give the same interval.
func ratioInterval(num, den []time.Duration) (lo, hi float64) {
	if len(num) == 0 || len(den) == 0 {
		return 0, 0
	}
	const resamples = 2000
	rng := rand.New(rand.NewPCG(1, 2))
	draw := func(from, to []time.Duration) []time.Duration {
		for i := range to {
			to[i] = from[rng.IntN(len(from))]
		}
		return to
	}
	n, d := make([]time.Duration, len(num)), make([]time.Duration, len(den))
	ratios := make([]float64, resamples)
	for i := range ratios {
		ratios[i] = over(quantile(draw(num, n), 0.99), quantile(draw(den, d), 0.99))
	}
	slices.Sort(ratios)
	return ratios[resamples*25/1000], ratios[resamples*975/1000-1]
}

// withInterval formats ratio, the ratio of the p99s of num and den that the
// row judges against its target, with its bootstrap interval.
func withInterval(ratio float64, num, den []time.Duration) string {
	lo, hi := ratioInterval(num, den)
	return fmt.Sprintf("%.1fx (%.1f-%.1fx)", ratio, lo, hi)
}

// over is the ratio a/b, with b at least a microsecond.
func over(a, b time.Duration) float64 { return float64(a) / float64(max(b, time.Microsecond)) }

func histQuantile(before, after map[float64]uint64, q float64) string {
	bounds := make([]float64, 0, len(after))
	for ub := range after {
		bounds = append(bounds, ub)
	}
	slices.Sort(bounds)
	if len(bounds) == 0 {
		return notMeasured
	}
	total := after[bounds[len(bounds)-1]] - before[bounds[len(bounds)-1]]
	for _, ub := range bounds {
		if float64(after[ub]-before[ub]) >= q*float64(total) {
			return ms(time.Duration(ub * float64(time.Second)))
		}
	}
	return notMeasured
}
