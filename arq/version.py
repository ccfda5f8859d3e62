VERSION = '0.26.3'
#: marks this implementation of arq (the published package has no such name): arq-supervise checks it at start-up,
#: because installing the published arq, directly or as another package's dependency, replaces this one
IMPLEMENTATION = 'arq-supervise'
