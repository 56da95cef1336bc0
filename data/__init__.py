"""lexalign.data"""
