"""Engine of the deep-learning-details study: data, models, training, results, figures, report."""
