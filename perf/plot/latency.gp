# Scenario 2: latency percentiles per server. perf/run calls it with
#   gnuplot -e "rundir='RUN_DIR'; outdir='perf/results'" perf/plot/latency.gp
set terminal pngcairo size 900,540 noenhanced font ",11"
set output outdir."/latency_s2.png"
set title "Scenario 2: latency at fixed load (1,000 subscribers x 200 ticks/s), now - scheduled emit time"
set ylabel "latency, ms (log scale)"
set logscale y
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set offsets 0, 0, graph 0.08, 0
set grid ytics
set key top left
f = rundir."/s2_latency.dat"
ncol = int(system("awk '/^#/ {print NF - 3; exit}' ".f))
names = system("awk '/^#/ {for (i = 3; i <= NF - 1; i++) printf \"%s \", $i; exit}' ".f)
colour(n) = n eq "tickfand" ? 2 : 3
plot for [i=2:ncol+1] f using i:xtic(1) lt colour(word(names, i - 1)) title word(names, i - 1), \
     for [i=2:ncol+1] f using ($0 + (i - 2 - (ncol - 1) / 2.0) * 0.9 / ncol):i:(sprintf("%.1f", column(i))) with labels offset 0,0.7 notitle
