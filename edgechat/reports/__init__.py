"""Floor 3, reports: tables, progress bars and charts for people. Imports core and targets only."""
