"""Figures: tidy tables from run folders (:mod:`probe.figures.tables`), one plot function per figure
(:mod:`probe.figures.plots`), receptive-field pictures (:mod:`probe.figures.fields`), and `probe figures`
(:mod:`probe.figures.make`)."""
