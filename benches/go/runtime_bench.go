// runtime_bench measures the Go runtime the same way target-runtime/benches/runtime.rs
// measures target-runtime, so that the two can be compared side by side
// (benches/runtime-vs-go.sh).
//
// Build (offline, no module needed):
//
//	GOFLAGS=-mod=mod GO111MODULE=off go build -o runtime_bench benches/go/runtime_bench.go
//
// Usage: runtime_bench [-reps R] [-n N] [-workers W] BENCH...
// with BENCH one of yield1 yield2 spawn pingpong mem; no BENCH runs them all.
// -workers sets GOMAXPROCS (the Rust program's worker count).
//
// Output: one tab-separated line per benchmark,
// "impl bench workers iters unit median min max samples", impl being "go".
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func nsPer(d time.Duration, ops int64) float64 {
	return float64(d.Nanoseconds()) / float64(ops)
}

// One goroutine calling runtime.Gosched k times.
func yield1(k int64) float64 {
	t := time.Now()
	for i := int64(0); i < k; i++ {
		runtime.Gosched()
	}
	return nsPer(time.Since(t), k)
}

// Two goroutines each calling runtime.Gosched k times; ns per yield (per switch).
func yield2(k int64) float64 {
	var wg sync.WaitGroup
	t := time.Now()
	wg.Add(2)
	for j := 0; j < 2; j++ {
		go func() {
			for i := int64(0); i < k; i++ {
				runtime.Gosched()
			}
			wg.Done()
		}()
	}
	wg.Wait()
	return nsPer(time.Since(t), 2*k)
}

// Start a trivial goroutine and wait for it, n times. A fresh channel per goroutine,
// like the Rust JoinHandle (one allocation per task, closed when it ends).
func spawnJoin(n int64) float64 {
	one := func() {
		done := make(chan struct{})
		go func() { close(done) }()
		<-done
	}
	for i := 0; i < 1000; i++ {
		one()
	}
	t := time.Now()
	for i := int64(0); i < n; i++ {
		one()
	}
	return nsPer(time.Since(t), n)
}

// Ping-pong over two unbuffered channels, n round trips.
func pingpong(n int64) float64 {
	ping := make(chan uint64)
	pong := make(chan uint64)
	done := make(chan struct{})
	go func() {
		for v := range ping {
			pong <- v
		}
		close(done)
	}()
	for i := uint64(0); i < 1000; i++ {
		ping <- i
		<-pong
	}
	t := time.Now()
	for i := uint64(0); i < uint64(n); i++ {
		ping <- i
		<-pong
	}
	ns := nsPer(time.Since(t), n)
	close(ping)
	<-done
	return ns
}

// Resident set size in bytes from /proc/self/statm (same as the Rust program).
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		panic(err)
	}
	f := strings.Fields(string(b))
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		panic(err)
	}
	return pages * int64(os.Getpagesize())
}

// RSS growth per goroutine for n goroutines parked receiving on one unbuffered channel.
// Also returns the growth of MemStats.StackInuse per goroutine, for reference.
func mem(n int64) (float64, float64) {
	// Let the runtime reach its steady state first.
	done := make(chan struct{})
	go func() { close(done) }()
	<-done
	time.Sleep(20 * time.Millisecond)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	before := rssBytes()
	ch := make(chan uint64)
	var started int64
	for i := int64(0); i < n; i++ {
		go func() {
			atomic.AddInt64(&started, 1)
			<-ch
		}()
	}
	for atomic.LoadInt64(&started) < n {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	after := rssBytes()
	runtime.ReadMemStats(&ms1)
	close(ch)
	return float64(after-before) / float64(n),
		(float64(ms1.StackInuse) - float64(ms0.StackInuse)) / float64(n)
}

func median(v []float64) float64 {
	sort.Float64s(v)
	m := len(v) / 2
	if len(v)%2 == 1 {
		return v[m]
	}
	return (v[m-1] + v[m]) / 2
}

func report(bench string, workers int, iters int64, unit string, samples []float64) {
	list := make([]string, len(samples))
	for i, s := range samples {
		list[i] = fmt.Sprintf("%.1f", s)
	}
	med := median(samples)
	fmt.Printf("go\t%s\t%d\t%d\t%s\t%.1f\t%.1f\t%.1f\t%s\n",
		bench, workers, iters, unit, med, samples[0], samples[len(samples)-1], strings.Join(list, ","))
}

func memInChild(workers int, n int64) (float64, float64) {
	out, err := exec.Command(os.Args[0], "-reps", "1", "-workers", strconv.Itoa(workers),
		"-n", strconv.FormatInt(n, 10), "mem").Output()
	if err != nil {
		panic(err)
	}
	get := func(name string) float64 {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Split(l, "\t")
			if len(f) > 5 && f[1] == name {
				v, err := strconv.ParseFloat(f[5], 64)
				if err != nil {
					panic(err)
				}
				return v
			}
		}
		panic("child printed no " + name + " line: " + string(out))
	}
	return get("mem"), get("mem-stackinuse")
}

func runOne(bench string, workers int, n int64, reps int) {
	runtime.GOMAXPROCS(workers)
	iters := n
	var f func(int64) float64
	switch bench {
	case "yield1":
		f = yield1
		if iters == 0 {
			iters = 2000000
		}
	case "yield2":
		f = yield2
		if iters == 0 {
			iters = 1000000
		}
	case "spawn":
		f = spawnJoin
		if iters == 0 {
			iters = 200000
		}
	case "pingpong":
		f = pingpong
		if iters == 0 {
			iters = 200000
		}
	case "mem":
		if iters == 0 {
			iters = 100000
		}
		var all, stk []float64
		for rep := 0; rep < reps; rep++ {
			var b, s float64
			if rep == 0 {
				b, s = mem(iters)
			} else {
				b, s = memInChild(workers, iters)
			}
			all = append(all, b)
			stk = append(stk, s)
		}
		report("mem", workers, iters, "bytes/task", all)
		report("mem-stackinuse", workers, iters, "bytes/task", stk)
		return
	default:
		fmt.Fprintf(os.Stderr, "unknown benchmark %s (yield1 yield2 spawn pingpong mem)\n", bench)
		os.Exit(2)
	}
	samples := make([]float64, reps)
	for i := range samples {
		samples[i] = f(iters)
	}
	report(bench, workers, iters, "ns/op", samples)
}

func main() {
	reps := flag.Int("reps", 5, "repetitions (median reported)")
	n := flag.Int64("n", 0, "iterations (0: the benchmark's default)")
	workers := flag.Int("workers", 0, "GOMAXPROCS (0: 1, or 2 for mem)")
	flag.Parse()
	fmt.Println("impl\tbench\tworkers\titers\tunit\tmedian\tmin\tmax\tsamples")
	if flag.NArg() == 0 {
		for _, c := range []struct {
			b string
			w int
		}{{"yield1", 1}, {"yield2", 1}, {"spawn", 1}, {"spawn", 2}, {"pingpong", 1}, {"pingpong", 2}, {"mem", 2}} {
			w := c.w
			if *workers != 0 {
				w = *workers
			}
			runOne(c.b, w, *n, *reps)
		}
		return
	}
	for _, b := range flag.Args() {
		w := *workers
		if w == 0 {
			w = 1
			if b == "mem" {
				w = 2
			}
		}
		runOne(b, w, *n, *reps)
	}
}
